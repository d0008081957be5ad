"""Datasets in the job database: the reads (SQL on any engine) and the writer's operations.

Dataset writes go through the single writer like job writes, for one reason: a job's creation
checks its dataset version, and a dataset's deletion checks the live jobs that use it; in one
writer the two cannot interleave, so no job is ever created on a dataset being deleted.
A version's state moves UPLOADING → VALIDATING → VALID | INVALID, each step compare-and-set.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection

from ray_app.datasets.models import ValidationReport, VersionState
from ray_app.jobs.errors import Conflict, StoreError
from ray_app.store import db
from ray_app.store.writer import Writer
from ray_app.teams.policy import DEFAULT_PROJECT

Row = dict[str, Any]


class DatasetNotFound(StoreError):
    status_code = 404


class DatasetUnusable(StoreError):
    """A job names a dataset version that is not there or not valid (the API answers 422)."""

    status_code = 422


# ---------------------------------------------------------------- reads on a connection


def dataset_row(conn: Connection, dataset_id: str) -> Row | None:
    row = conn.execute(select(db.datasets).where(db.datasets.c.id == dataset_id)).first()
    return dict(row._mapping) if row is not None else None


def version_rows(conn: Connection, dataset_ids: list[str]) -> dict[str, list[Row]]:
    """Each dataset's versions, newest first."""
    out: dict[str, list[Row]] = {i: [] for i in dataset_ids}
    if not dataset_ids:
        return out
    stmt = (select(db.dataset_versions).where(db.dataset_versions.c.dataset_id.in_(dataset_ids))
            .order_by(db.dataset_versions.c.created_at.desc(), db.dataset_versions.c.version))
    for row in db.rows(conn.execute(stmt)):
        out[row["dataset_id"]].append(row)
    return out


def _shaped(dataset: Row, versions: list[Row]) -> Row:
    latest = next((v["version"] for v in versions if v["state"] == VersionState.VALID), None)
    return {**dataset, "versions": versions, "latest_valid_version": latest}


def get_dataset(conn: Connection, dataset_id: str) -> Row:
    dataset = dataset_row(conn, dataset_id)
    if dataset is None:
        raise DatasetNotFound(f"dataset {dataset_id} not found")
    return _shaped(dataset, version_rows(conn, [dataset_id])[dataset_id])


def list_datasets(conn: Connection, after: str | None, limit: int,
                  projects: list[str] | None = None) -> tuple[list[Row], str | None]:
    """By name; `after`: the last name of the previous page; `projects`: only the datasets of
    these projects (None: all)."""
    stmt = select(db.datasets).order_by(db.datasets.c.id).limit(limit + 1)
    if projects is not None:
        stmt = stmt.where(db.datasets.c.project_id.in_(projects))
    if after is not None:
        stmt = stmt.where(db.datasets.c.id > after)
    rows = db.rows(conn.execute(stmt))
    more = len(rows) > limit
    rows = rows[:limit]
    versions = version_rows(conn, [r["id"] for r in rows])
    return [_shaped(r, versions[r["id"]]) for r in rows], rows[-1]["id"] if more else None


def find_version(conn: Connection, dataset_id: str, ref: str) -> Row:
    """A version by its hash or a unique prefix of it."""
    rows = db.rows(conn.execute(select(db.dataset_versions).where(
        db.dataset_versions.c.dataset_id == dataset_id,
        db.dataset_versions.c.version.startswith(ref, autoescape=True)).limit(2)))
    if not rows:
        raise DatasetNotFound(f"dataset {dataset_id} has no version {ref}")
    if len(rows) > 1:
        raise DatasetUnusable(f"dataset {dataset_id}: version prefix {ref} is ambiguous; give more of it")
    return rows[0]


def version_for_job(conn: Connection, dataset_id: str, ref: str | None) -> Row | None:
    """The version a new job on `dataset_id` trains on: the one named, else the newest valid one.
    None for a dataset not registered (named by its place in S3 only, DESIGN §3). Raises
    DatasetUnusable, naming the dataset and its first problems, for one that cannot be trained on."""
    dataset = dataset_row(conn, dataset_id)
    if dataset is None:
        if ref is not None:
            raise DatasetUnusable(f"dataset_version given, but dataset {dataset_id} is not registered")
        return None
    if ref is not None:
        try:
            version = find_version(conn, dataset_id, ref)
        except DatasetNotFound as exc:
            raise DatasetUnusable(exc.detail) from None
    else:
        versions = version_rows(conn, [dataset_id])[dataset_id]
        found: Row | None = next((v for v in versions if v["state"] == VersionState.VALID), None)
        if found is None:
            states = ", ".join(f"{v['version'][:12]} {v['state']}" for v in versions) or "none"
            first = next((v for v in versions if v["state"] == VersionState.INVALID), None)
            raise DatasetUnusable(f"dataset {dataset_id} has no valid version (versions: {states})"
                                  + (f"; {problems_summary(first)}" if first else ""))
        version = found
    if version["state"] != VersionState.VALID:
        why = problems_summary(version) if version["state"] == VersionState.INVALID else "not validated yet"
        raise DatasetUnusable(f"dataset {dataset_id} version {version['version'][:12]} is "
                              f"{version['state']}: {why}")
    return version


def problems_summary(version: Row, first: int = 3) -> str:
    report = version.get("report") or {}
    problems = report.get("problems") or []
    shown = "; ".join(f"{p.get('file')}: {p.get('problem')}" if p.get("file") else str(p.get("problem"))
                      for p in problems[:first])
    total = report.get("problems_total", len(problems))
    more = f" (and {total - first} more)" if total > first else ""
    return f"{total} problem(s): {shown}{more}"


# ---------------------------------------------------------------- the writer's operations


class DatasetWriter(Writer):
    def open_dataset_version(self, dataset_id: str, description: str, version: Row, project_id: str = DEFAULT_PROJECT,
                             created_by: str | None = None) -> tuple[Row, bool]:
        """Record an upload's version (state UPLOADING), creating the dataset on its first
        upload, in `project_id`. (the existing row, False) when the version is there already:
        same content."""
        now = db.utcnow()
        with self.engine.begin() as conn:
            existing_dataset = dataset_row(conn, dataset_id)
            if existing_dataset is None:
                conn.execute(db.datasets.insert().values(id=dataset_id, description=description, created_at=now,
                                                         updated_at=now, project_id=project_id, created_by=created_by))
            elif existing_dataset["project_id"] != project_id:  # the API checked; a race with another project's
                raise Conflict(f"dataset {dataset_id} belongs to another project")
            existing = conn.execute(select(db.dataset_versions).where(
                db.dataset_versions.c.dataset_id == dataset_id,
                db.dataset_versions.c.version == version["version"])).first()
            if existing is not None:
                return dict(existing._mapping), False
            row = {"classes": [], "splits": {}, "images": 0, **version, "dataset_id": dataset_id,
                   "state": VersionState.UPLOADING.value, "created_at": now}
            conn.execute(db.dataset_versions.insert().values(**row))
            values: dict[str, Any] = {"updated_at": now}
            if description:
                values["description"] = description
            conn.execute(update(db.datasets).where(db.datasets.c.id == dataset_id).values(**values))
        return row, True

    def _move_version(self, dataset_id: str, version: str, source: VersionState, **values: Any) -> Row:
        with self.engine.begin() as conn:
            done = conn.execute(update(db.dataset_versions).where(
                db.dataset_versions.c.dataset_id == dataset_id, db.dataset_versions.c.version == version,
                db.dataset_versions.c.state == source.value).values(**values))
            row = find_version(conn, dataset_id, version)
            if done.rowcount == 0 and row["state"] != values.get("state"):
                raise Conflict(f"dataset {dataset_id} version {version[:12]} is {row['state']}, "
                               f"not {source.value}")
            return row

    def dataset_upload_reopened(self, dataset_id: str, version: str, upload_id: str) -> Row:
        """An upload the storage forgot (aborted, expired) is replaced by a new one."""
        return self._move_version(dataset_id, version, VersionState.UPLOADING,
                                  state=VersionState.UPLOADING.value, upload_id=upload_id)

    def dataset_upload_completed(self, dataset_id: str, version: str) -> Row:
        """UPLOADING → VALIDATING (idempotent: a repeated completion finds it validating)."""
        return self._move_version(dataset_id, version, VersionState.UPLOADING,
                                  state=VersionState.VALIDATING.value, upload_id=None,
                                  completed_at=db.utcnow())

    def dataset_validated(self, dataset_id: str, version: str, report: Row) -> Row:
        """VALIDATING → VALID or INVALID, with the report and what it found."""
        valid = ValidationReport.model_validate(report).valid
        return self._move_version(
            dataset_id, version, VersionState.VALIDATING,
            state=(VersionState.VALID if valid else VersionState.INVALID).value, report=report,
            format=report.get("format"), task_type=report.get("task_type"),
            classes=report.get("classes") or [], splits=report.get("splits") or {},
            images=int(report.get("images") or 0), validated_at=db.utcnow())

    def delete_dataset(self, dataset_id: str) -> list[Row]:
        """Delete a dataset and its versions' rows; returns the versions (their objects and open
        uploads are for the caller to remove). Conflict while a live job uses it."""
        users = sorted(j["id"] for j in self._jobs.values() if j["dataset_id"] == dataset_id)
        if users:
            raise Conflict(f"dataset {dataset_id} is used by {len(users)} queued or running job(s): "
                           f"{', '.join(users[:5])}; cancel them or wait until they end")
        with self.engine.begin() as conn:
            dataset = get_dataset(conn, dataset_id)
            conn.execute(delete(db.dataset_versions).where(db.dataset_versions.c.dataset_id == dataset_id))
            conn.execute(delete(db.datasets).where(db.datasets.c.id == dataset_id))
        return dataset["versions"]

    def check_job_dataset(self, conn: Connection, spec: Row) -> None:
        """Inside create_job's transaction: the version the API resolved is still there and valid
        (a dataset deleted between the API's check and this write refuses the job)."""
        if spec.get("dataset_version"):
            version_for_job(conn, spec["dataset_id"], spec["dataset_version"])
