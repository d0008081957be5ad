"""The job database: SQLAlchemy tables and the few statements the store needs.

SQLite by default, PostgreSQL by URL. Everything the platform knows about a job is here, so a
restarted JobStore (or a restarted Ray cluster) reloads it all.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    bindparam,
    false,
    true,
    create_engine,
    event,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from ray_app.store import migrate

metadata = MetaData()


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Timestamps stored in UTC and read back timezone-aware (UTC) on every backend.

    A TypeDecorator, not a DateTime subclass: each dialect replaces DateTime by its own type
    (SQLite's DATETIME), so a subclass's result processor was never called, and rows read back
    from SQLite were naive (the API then sent them without a timezone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if isinstance(value, datetime):
            value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
            if dialect.name == "sqlite":  # stored as text without an offset: always UTC
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if isinstance(value, datetime):
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value


jobs = Table(
    "jobs",
    metadata,
    Column("num", Integer, primary_key=True, autoincrement=True),  # creation order, cursors
    Column("id", String(64), unique=True, nullable=False),
    Column("trace_id", String(64), nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("framework", String(64), nullable=False, index=True),
    Column("task_type", String(64), nullable=False),
    Column("model_name", String(128), nullable=False),
    Column("dataset_id", String(256), nullable=False),
    Column("project_id", String(128), nullable=False, index=True),
    Column("epochs", Integer, nullable=False),
    Column("batch_size", Integer, nullable=False),
    Column("learning_rate", Float, nullable=False),
    Column("image_size", Integer, nullable=False),
    Column("num_gpus", Float, nullable=False),
    Column("num_cpus", Float),
    Column("memory_mb", Integer),
    Column("config", JSON, nullable=False),
    Column("advanced_config", JSON, nullable=False),
    Column("progress", Float, nullable=False, default=0.0),
    Column("epoch", Integer),
    Column("total_epochs", Integer),
    Column("step", Integer),
    Column("total_steps", Integer),
    Column("latest_metrics", JSON, nullable=False),
    Column("final_metrics", JSON, nullable=False),
    Column("artifacts", JSON, nullable=False),
    Column("error", Text),
    Column("error_type", String(32)),
    Column("traceback", Text),
    Column("mlflow_run_id", String(128)),
    Column("resume_from", Text),
    Column("last_checkpoint", Text),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("cancel_requested_at", UTCDateTime()),
    Column("done", JSON),  # the accepted done body of the current attempt
    Column("training_time_seconds", Float),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("queued_at", UTCDateTime()),
    Column("started_at", UTCDateTime()),
    Column("finished_at", UTCDateTime()),
    Column("last_heartbeat_at", UTCDateTime()),
    Column("last_progress_at", UTCDateTime()),
    # the registered dataset version the job trains on (its content hash) and where it lies;
    # NULL for a dataset named only by its place in S3 (datasets/{id}.zip or datasets/{id}/)
    Column("dataset_version", String(64)),
    Column("dataset_uri", Text),
    # the MLflow Model Registry name the job asked for, and its model once logged (or why not):
    # {"uri", "registered_name", "registered_version", "error"} (ray_app/serving/mlflow_models.py)
    Column("register_as", String(128)),
    Column("mlflow_model", JSON),
    # why a job that is not running yet waits, in words (e.g. its retry backoff), and until when
    # a retried attempt waits before it is started (jobs/recovery.py: retry_delay_s)
    Column("wait_reason", Text),
    Column("retry_at", UTCDateTime()),
    # a gang of ranks (jobs/ranks.py): W workers, each a bundle of the job's per-worker resources
    # in one placement group, packed onto few nodes or spread over many
    Column("workers", Integer, nullable=False, server_default="1"),
    Column("placement_strategy", String(8), nullable=False, server_default="PACK"),
    # who submitted the job and who asked to cancel it (users.id; NULL for jobs made before teams)
    Column("created_by", String(64)),
    Column("cancelled_by", String(64)),
    # a sweep's trial (ray_app/sweeps): its sweep, its number there (1, 2, ...), the values the
    # search gave it (by path), and whether the sweep's scheduler stopped it early (it is then
    # CANCELLED: its trainer was asked to stop through the contract)
    Column("sweep_id", String(64)),
    Column("sweep_trial", Integer),
    Column("sweep_params", JSON),
    Column("stopped_early", Boolean, nullable=False, server_default=false()),
    # the shared cluster's queue (ray_app/scheduling): the job's priority (0-100, higher first),
    # when the controller asked its running attempt to stop for a job of higher priority, and
    # how many of its attempts ended so (they do not count against max_attempts)
    Column("priority", Integer, nullable=False, server_default="50"),
    Column("preempt_requested_at", UTCDateTime()),
    Column("preemptions", Integer, nullable=False, server_default="0"),
    # what changed since a position, in order: the job-list stream (store/reads.changed_jobs)
    Index("ix_jobs_updated_at", "updated_at", "num"),
    Index("ux_jobs_sweep_trial", "sweep_id", "sweep_trial", unique=True),
)

events = Table(
    "job_events",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("attempt", Integer, nullable=False),
    Column("level", String(16), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("message", Text, nullable=False),
    Column("data", JSON, nullable=False),
    Column("source", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

metrics = Table(
    "job_metrics",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("epoch", Integer, primary_key=True),
    Column("step", Integer),
    Column("metrics", JSON, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

logs = Table(
    "job_logs",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("attempt", Integer, nullable=False),
    Column("stream", String(8), nullable=False),
    Column("line", Text, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("rank", Integer, nullable=False, server_default="0"),  # the rank whose process printed it
)

# One row per attempt: the job's history of tries (store/attempts.py). Written when the
# attempt's process starts (node, pid, pgid) or when it ends, whichever comes first.
attempts = Table(
    "job_attempts",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("outcome", String(16)),  # retried | succeeded | failed | cancelled; NULL while it runs
    Column("queued_at", UTCDateTime()),
    Column("started_at", UTCDateTime()),
    Column("ended_at", UTCDateTime()),  # NULL while it runs
    Column("node_id", String(64)),
    Column("exit_code", Integer),
    Column("signal", String(16)),
    Column("error_type", String(32)),
    Column("reason", Text),
    Column("resume_from", Text),
    Column("pid", Integer),  # the trainer process, and its process group (start_new_session)
    Column("pgid", Integer),
    # the runner stored the attempt's last output line: a log reader has everything
    Column("output_complete", Boolean, nullable=False, server_default=false()),
    # every rank's process of a gang: [{rank, node_id, pid, pgid}] (rank 0 is also node_id/pid/pgid)
    Column("ranks", JSON),
)

# Datasets registered through the API (store/datasets.py): a name, and its versions, each one
# uploaded archive identified by the SHA-256 of its bytes (ray_app/datasets/models.py).
datasets = Table(
    "datasets",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("description", Text, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("project_id", String(128), nullable=False, server_default="default", index=True),
    Column("created_by", String(64)),
)

dataset_versions = Table(
    "dataset_versions",
    metadata,
    Column("dataset_id", String(128), ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True),
    Column("version", String(64), primary_key=True),  # SHA-256 of the archive, hex
    Column("state", String(16), nullable=False),  # uploading | validating | valid | invalid
    Column("filename", String(255), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("key", Text, nullable=False),  # the object in the platform's bucket
    Column("upload_id", Text),  # the S3 multipart upload while uploading
    Column("part_size", BigInteger, nullable=False),
    Column("format", String(16)),
    Column("task_type", String(64)),
    Column("classes", JSON, nullable=False),
    Column("splits", JSON, nullable=False),
    Column("images", Integer, nullable=False),
    Column("report", JSON),  # the ValidationReport, once validated
    Column("created_at", UTCDateTime(), nullable=False),
    Column("completed_at", UTCDateTime()),
    Column("validated_at", UTCDateTime()),
)

# A finished job's model exported to another format (ONNX, TorchScript...) by its trainer's
# export.py (ray_app/serving/exports.py): pending -> running -> succeeded | failed; the files
# lie in S3 under artifacts/job-{id}/exports/{export id}/ ([{name, size_bytes, uri}]).
exports = Table(
    "job_exports",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("job_id", String(64), nullable=False, index=True),
    Column("format", String(32), nullable=False),
    Column("options", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("files", JSON, nullable=False),
    Column("error", Text),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("started_at", UTCDateTime()),
    Column("finished_at", UTCDateTime()),
)

# ---------------------------------------------------------------- teams (ray_app/teams, store/teams.py)
# A user is a person (or a robot account); `id` is their handle. external_issuer/subject: an
# identity from a single sign-on provider (OIDC `iss` and `sub`), attached later without another
# change to the access model.
users = Table(
    "users",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("display_name", Text, nullable=False),
    Column("platform_admin", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("created_by", String(64)),
    Column("disabled_at", UTCDateTime()),
    Column("external_issuer", String(255)),
    Column("external_subject", String(255)),
    UniqueConstraint("external_issuer", "external_subject", name="uq_users_external"),
)

# Personal API tokens: only the SHA-256 of the secret is kept (teams/tokens.py).
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", String(64), ForeignKey("users.id"), nullable=False, index=True),
    Column("name", String(64), nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("last_used_at", UTCDateTime()),
    Column("expires_at", UTCDateTime()),
    Column("revoked_at", UTCDateTime()),
)

projects = Table(
    "projects",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("description", Text, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("created_by", String(64)),
    # its share of the cluster (ray_app/scheduling): the most it may hold at once (NULL:
    # unlimited), its fair-share weight, and whether its jobs may be preempted
    Column("max_gpus", Float),
    Column("max_cpus", Float),
    Column("max_running_jobs", Integer),
    Column("weight", Float, nullable=False, server_default="1"),
    Column("preemptible", Boolean, nullable=False, server_default=true()),
)

# each project's decayed use of the cluster (scheduling/usage.py), as of `updated_at`: the
# controller writes it as it goes, so a restarted controller goes on from where it was
project_usage = Table(
    "project_usage",
    metadata,
    Column("project_id", String(128), primary_key=True),
    Column("cpu_seconds", Float, nullable=False),
    Column("gpu_seconds", Float, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

project_members = Table(
    "project_members",
    metadata,
    Column("project_id", String(128), ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", String(64), ForeignKey("users.id"), primary_key=True, index=True),
    Column("role", String(8), nullable=False),  # viewer | member | admin (teams/policy.Role)
    Column("added_at", UTCDateTime(), nullable=False),
    Column("added_by", String(64)),
)

# Every mutating call, append-only (api/audit.py): who, with which token (its name), what, on
# which resource of which project, and how it ended. Never a secret, never a body's values.
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", UTCDateTime(), nullable=False, index=True),
    Column("user_id", String(64), index=True),
    Column("token_name", String(64)),
    Column("action", String(64), nullable=False),
    Column("method", String(8), nullable=False),
    Column("path", String(512), nullable=False),
    Column("resource", String(300)),
    Column("project_id", String(128), index=True),
    Column("outcome", Integer, nullable=False),
    Column("request_id", String(64), nullable=False),
)

# Idempotency keys of applied callbacks: inserting an existing key is the "already applied" test.
# hyperparameter sweeps (ray_app/sweeps): a base job, a search space and an objective, run by a
# Ray Tune experiment (its state in S3 under sweeps/<id>); its trials are jobs (jobs.sweep_id)
sweeps = Table(
    "sweeps",
    metadata,
    Column("num", Integer, primary_key=True, autoincrement=True),  # creation order, cursors
    Column("id", String(64), unique=True, nullable=False),
    Column("name", Text, nullable=False),
    Column("project_id", String(128), nullable=False, index=True),
    Column("state", String(16), nullable=False, index=True),
    Column("spec", JSON, nullable=False),  # the accepted body, with its base job resolved
    Column("error", Text),
    # a stop asked for (cancel, or a failure found by a trial): CANCELLED or FAILED once no trial
    # runs any more
    Column("stop_requested", String(16)),
    Column("best_job_id", String(64)),
    Column("registered_model", JSON),
    Column("mlflow_parent_run_id", String(128)),
    Column("created_by", String(64)),
    Column("cancelled_by", String(64)),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("started_at", UTCDateTime()),
    Column("finished_at", UTCDateTime()),
)

callback_keys = Table(
    "job_callback_keys",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("key", String(160), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # WAL: readers do not block the single writer
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    else:
        engine = create_engine(url, pool_pre_ping=True)
    # the schema is Alembic's (store/migrations): an empty database is created, an older one
    # upgraded, one made by create_all() before Alembic adopted; safe with concurrent starts
    migrate.upgrade(engine)
    return engine


def _insert(dialect: str, table: Table):
    if dialect == "sqlite":
        return sqlite.insert(table)
    if dialect == "postgresql":
        return postgresql.insert(table)
    raise RuntimeError(f"unsupported database dialect {dialect!r} (use SQLite or PostgreSQL)")


def insert_key_once(conn: Connection, job_id: str, key: str) -> bool:
    """Record an idempotency key; False when it was already there (a retried callback)."""
    # a row back means inserted; rowcount is driver-dependent
    row = conn.execute(insert_keys_stmt(conn.dialect.name),
                       {"job_id": job_id, "key": key, "created_at": utcnow()}).first()
    return row is not None


def upsert_metrics(
    conn: Connection, job_id: str, attempt: int, epoch: int, step: int | None, values: dict
) -> None:
    """Metrics are kept per (attempt, epoch): a later heartbeat for the epoch merges into it."""
    existing = conn.execute(
        metrics_row_stmt, {"job_id": job_id, "attempt": attempt, "epoch": epoch}
    ).scalar_one_or_none()
    conn.execute(upsert_metrics_stmt(conn.dialect.name), {
        "job_id": job_id, "attempt": attempt, "epoch": epoch, "step": step,
        "metrics": {**(existing or {}), **values}, "updated_at": utcnow()})


def rows(result: Iterable[Any]) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in result]


def max_seq(conn: Connection, table: Table, job_ids: Sequence[str] | None = None) -> dict[str, int]:
    """Highest sequence number per job, so a reloaded store continues each history in order."""
    stmt = select(table.c.job_id, func.max(table.c.seq)).group_by(table.c.job_id)
    if job_ids is not None:
        stmt = stmt.where(table.c.job_id.in_(job_ids))
    return {job_id: seq for job_id, seq in conn.execute(stmt)}


# ---------------------------------------------------------------- statements built once
# Built once per dialect and shared by the single-callback path and the batches (store/bulk.py):
# a batch then costs a handful of executions of cached statements instead of building (and
# cache-keying) three or four SQLAlchemy statements per heartbeat.


@functools.cache
def insert_keys_stmt(dialect: str):
    """The rows that come back are the keys that were new (inserted); executemany in a batch."""
    return (_insert(dialect, callback_keys)
            .on_conflict_do_nothing(index_elements=["job_id", "key"])
            .returning(callback_keys.c.job_id, callback_keys.c.key))


@functools.cache
def upsert_metrics_stmt(dialect: str):
    """Already-merged rows (one per (job, attempt, epoch)); executemany in a batch."""
    stmt = _insert(dialect, metrics)
    return stmt.on_conflict_do_update(
        index_elements=["job_id", "attempt", "epoch"],
        set_={"step": stmt.excluded.step, "metrics": stmt.excluded.metrics,
              "updated_at": stmt.excluded.updated_at},
    )


# the job-row columns a heartbeat changes; the batch writes each job's final values once
HEARTBEAT_COLUMNS = ("epoch", "total_epochs", "step", "total_steps", "progress", "latest_metrics",
                     "last_heartbeat_at", "last_progress_at", "updated_at")

update_heartbeat_stmt = (
    update(jobs).where(jobs.c.id == bindparam("_id"))
    # bind names may not be column names in an UPDATE's SET clause
    .values({name: bindparam(f"v_{name}", type_=jobs.c[name].type) for name in HEARTBEAT_COLUMNS})
)

max_metrics_epoch_stmt = select(func.max(metrics.c.epoch)).where(
    metrics.c.job_id == bindparam("job_id"), metrics.c.attempt == bindparam("attempt"))

metrics_row_stmt = select(metrics.c.metrics).where(
    metrics.c.job_id == bindparam("job_id"), metrics.c.attempt == bindparam("attempt"),
    metrics.c.epoch == bindparam("epoch"))
