"""An installation's MLflow artifacts, moved from local folders into the bucket.

Before the platform served MLflow (ray_app/serving/mlflow_server.py), trainers and the model task
wrote into the store directly, and MLflow kept each experiment's artifacts under `./mlruns` of
whichever process created the experiment: a trainer package's folder in
~/.cache/vtp-trainer-packages, on the node that ran the job. This moves them to
s3://<bucket>/mlflow/, where the served MLflow keeps every new run's, and points the store there:

- a run whose artifact URI is a local folder: its files to mlflow/<experiment>/<run>/artifacts/,
  its URI `mlflow-artifacts:/<experiment>/<run>/artifacts`; a logged model (MLflow 3) likewise
  under <experiment>/models/<model id>/artifacts; a registered model version whose source or
  storage location lies in such a folder moves with it (in the same transaction);
- an experiment whose artifact location is a local folder: `mlflow-artifacts:/<experiment>`, so
  its next runs go to the bucket.

It runs at every `vtp up`, before the API starts (ray_app/local/platform.py), and by hand on any
machine that holds such folders (`python -m ray_app.serving.mlflow_migrate`, with the platform's
VTP_* settings). A row changes only once its files are in the bucket, so an interrupted migration
finishes on the next run; nothing local is deleted; a row whose folder is not on this machine
stays as it is, and is counted. MLflow has no API to move artifacts, so this updates its tables
(experiments, runs, logged_models, model_versions) with SQL; a column an older MLflow lacks is
skipped.
"""

from __future__ import annotations

import logging
import mimetypes
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import sqlalchemy as sa

from ray_app.config import Settings
from ray_app.serving import mlflow_server

log = logging.getLogger("ray_app.serving")
SCHEME = mlflow_server.ARTIFACT_ROOT  # "mlflow-artifacts:/": what the served MLflow resolves to the bucket


@dataclass
class Report:
    moved: list[str] = field(default_factory=list)  # "run <id>", "logged model <id>"
    files: int = 0
    not_here: list[str] = field(default_factory=list)  # rows whose folder this machine lacks
    experiments: int = 0

    def summary(self) -> str:
        text = (f"MLflow artifacts moved to the bucket: {len(self.moved)} runs and models ({self.files} files), "
                f"{self.experiments} experiments")
        if self.not_here:
            text += (f"; {len(self.not_here)} left as they are, their folders not on this machine: "
                     f"{', '.join(self.not_here[:10])}{' ...' if len(self.not_here) > 10 else ''}")
        return text


def local_path(uri: str | None) -> Path | None:
    """The folder a local artifact URI (a path, or file://) names; None for any other URI."""
    if not uri:
        return None
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and uri.startswith("/"):
        return Path(uri)
    return None


def _under(uri: str | None, folder: Path) -> str | None:
    """The part of `uri` below `folder` ('' for the folder itself), if `uri` is inside it."""
    path = local_path(uri)
    if path is None:
        return None
    try:
        rel = path.relative_to(folder)
    except ValueError:
        return None
    return "" if str(rel) == "." else rel.as_posix()


class _Tables:
    def __init__(self, engine: sa.Engine) -> None:
        meta = sa.MetaData()
        names = set(sa.inspect(engine).get_table_names())
        self.t: dict[str, sa.Table] = {name: sa.Table(name, meta, autoload_with=engine) for name in
                                       ("experiments", "runs", "logged_models", "model_versions") if name in names}

    def get(self, name: str) -> sa.Table | None:
        return self.t.get(name)

    def has(self, table: str, column: str) -> bool:
        return table in self.t and column in self.t[table].c


def migrate(settings: Settings, say: Callable[[str], None] | None = None) -> Report:
    """Move the local artifacts of the store the platform serves (nothing for another store)."""
    report = Report()
    if not mlflow_server.served(settings) or not _store_exists(settings.mlflow_tracking_uri or ""):
        return report
    engine = sa.create_engine(settings.mlflow_tracking_uri or "")
    try:
        tables = _Tables(engine)
        if "runs" not in tables.t:
            return report
        units = _local_units(engine, tables)
        if not units and not _local_experiments(engine, tables):
            return report
        from ray_app.storage import s3 as s3lib

        client = s3lib.make_client(settings)
        s3lib.ensure_bucket(client, settings.s3_bucket)
        for table, key, row_id, uri, new in units:
            folder = local_path(uri)
            assert folder is not None
            label = f"{'run' if table == 'runs' else 'logged model'} {row_id}"
            if not folder.is_dir():
                report.not_here.append(label)
                continue
            report.files += _upload(client, settings.s3_bucket, folder, _key(new))
            with engine.begin() as conn:
                conn.execute(sa.update(tables.t[table]).where(tables.t[table].c[key] == row_id)
                             .values({_uri_column(table): new}))
                _move_versions(conn, tables, folder, new)
            report.moved.append(label)
        experiments = _local_experiments(engine, tables)  # their next runs go to the bucket
        with engine.begin() as conn:
            for exp_id, _ in experiments:
                exp = tables.t["experiments"]
                conn.execute(sa.update(exp).where(exp.c.experiment_id == exp_id)
                             .values(artifact_location=f"{SCHEME}{exp_id}"))
        report.experiments = len(experiments)
    finally:
        engine.dispose()
    if say is not None and (report.moved or report.not_here or report.experiments):
        say(report.summary())
    return report


def _store_exists(uri: str) -> bool:
    """A SQLite store that is not there yet is a new installation (nothing to move, and no file
    to create here); any other database is asked."""
    url = sa.engine.make_url(uri)
    return url.get_backend_name() != "sqlite" or not url.database or os.path.exists(url.database)


def _uri_column(table: str) -> str:
    return "artifact_uri" if table == "runs" else "artifact_location"


def _local_units(engine: sa.Engine, tables: _Tables) -> list[tuple[str, str, Any, str, str]]:
    """(table, key column, id, local URI, new URI) of every run and logged model whose artifacts
    are in a local folder."""
    found = []
    with engine.connect() as conn:
        runs = tables.t["runs"]
        for run_id, exp_id, uri in conn.execute(sa.select(runs.c.run_uuid, runs.c.experiment_id, runs.c.artifact_uri)):
            if local_path(uri) is not None:
                found.append(("runs", "run_uuid", run_id, uri, f"{SCHEME}{exp_id}/{run_id}/artifacts"))
        models = tables.get("logged_models")
        if models is not None and tables.has("logged_models", "artifact_location"):
            for model_id, exp_id, uri in conn.execute(
                    sa.select(models.c.model_id, models.c.experiment_id, models.c.artifact_location)):
                if local_path(uri) is not None:
                    found.append(("logged_models", "model_id", model_id, uri,
                                  f"{SCHEME}{exp_id}/models/{model_id}/artifacts"))
    return found


def _local_experiments(engine: sa.Engine, tables: _Tables) -> list[tuple[Any, str]]:
    if not tables.has("experiments", "artifact_location"):
        return []
    exp = tables.t["experiments"]
    with engine.connect() as conn:
        rows = conn.execute(sa.select(exp.c.experiment_id, exp.c.artifact_location)).all()
    return [(exp_id, uri) for exp_id, uri in rows if local_path(uri) is not None]


def _move_versions(conn: sa.Connection, tables: _Tables, folder: Path, new: str) -> None:
    """Registered model versions whose files are in `folder` now name the same files under `new`."""
    versions = tables.get("model_versions")
    if versions is None:
        return
    columns = [c for c in ("source", "storage_location") if c in versions.c]
    for row in conn.execute(sa.select(versions.c.name, versions.c.version, *[versions.c[c] for c in columns])):
        values = {}
        for column, uri in zip(columns, row[2:]):
            rel = _under(uri, folder)
            if rel is not None:
                values[column] = f"{new}/{rel}" if rel else new
        if values:
            conn.execute(sa.update(versions).where(versions.c.name == row[0], versions.c.version == row[1])
                         .values(values))


def _key(uri: str) -> str:
    """The bucket key prefix of an `mlflow-artifacts:/` URI (the served MLflow's destination)."""
    return f"{mlflow_server.ARTIFACTS_FOLDER}/{uri[len(SCHEME):].strip('/')}/"


def _upload(client: Any, bucket: str, folder: Path, prefix: str) -> int:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for file in files:
        ctype = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        client.upload_file(str(file), bucket, prefix + file.relative_to(folder).as_posix(),
                           ExtraArgs={"ContentType": ctype})
    return len(files)


def main() -> None:
    migrate(Settings(), print)


if __name__ == "__main__":
    main()
