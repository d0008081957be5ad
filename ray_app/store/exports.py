"""A job's exports in the job database: the reads (SQL on any engine) and the writer's operations.

An export (POST /v1/jobs/{id}/exports, ray_app/serving/exports.py) moves PENDING -> RUNNING ->
SUCCEEDED | FAILED. Its rows are written by the single writer like everything else a job owns;
a final export is never changed again, so a late or repeated report from a retried task cannot
turn a success into a failure. The API reads them by SQL (store/reads.py, JobReader).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from ray_app.jobs.errors import StoreError
from ray_app.jobs.export_models import FINAL_EXPORT_STATES
from ray_app.store import db, reads
from ray_app.store.writer import Writer

Row = dict[str, Any]

PENDING, RUNNING, SUCCEEDED, FAILED = "pending", "running", "succeeded", "failed"
FINAL = FINAL_EXPORT_STATES


class ExportNotFound(StoreError):
    status_code = 404


# ---------------------------------------------------------------- reads on a connection


def export_row(conn: Connection, job_id: str, export_id: str) -> Row:
    row = conn.execute(select(db.exports).where(db.exports.c.id == export_id,
                                                db.exports.c.job_id == job_id)).first()
    if row is None:
        reads.require_job(conn, job_id)
        raise ExportNotFound(f"job {job_id} has no export {export_id}")
    return dict(row._mapping)


def list_exports(conn: Connection, job_id: str) -> list[Row]:
    """The job's exports, newest first (404 for an unknown job)."""
    reads.require_job(conn, job_id)
    return db.rows(conn.execute(select(db.exports).where(db.exports.c.job_id == job_id)
                                .order_by(db.exports.c.created_at.desc(), db.exports.c.id)))


# ---------------------------------------------------------------- the writer's operations


class ExportWriter(Writer):
    def export_created(self, job_id: str, export_id: str, fmt: str, options: Row) -> Row:
        """Record a new PENDING export of the job; safe to repeat (the id is the caller's)."""
        job = self._job(job_id)
        with self._tx(job) as conn:
            existing = conn.execute(select(db.exports).where(db.exports.c.id == export_id)).first()
            if existing is not None:
                return dict(existing._mapping)
            row: Row = {"id": export_id, "job_id": job_id, "format": fmt, "options": options, "state": PENDING,
                   "files": [], "error": None, "created_at": db.utcnow(), "started_at": None,
                   "finished_at": None}
            conn.execute(db.exports.insert().values(**row))
            self._add_event(conn, job, "platform", "info", "export_requested",
                            f"export {export_id} to {fmt} requested", {"export_id": export_id, "format": fmt})
        return row

    def export_state(self, job_id: str, export_id: str, state: str, files: list[Row] | None = None,
                     error: str | None = None) -> Row:
        """Move an export on (RUNNING, or final with its files or its error). A final export stays
        as it is; the row is returned either way."""
        if state not in (RUNNING, SUCCEEDED, FAILED):
            raise ValueError(f"unknown export state {state!r}")
        job = self._job(job_id)
        now = db.utcnow()
        values: Row = {"state": state}
        if state == RUNNING:
            values["started_at"] = now
        else:
            values.update(finished_at=now, files=files or [], error=error)
        with self._tx(job) as conn:
            done = conn.execute(update(db.exports).where(
                db.exports.c.id == export_id, db.exports.c.job_id == job_id,
                db.exports.c.state.notin_(FINAL)).values(**values))
            row = export_row(conn, job_id, export_id)
            if done.rowcount and state in FINAL:
                if state == SUCCEEDED:
                    level, message = "info", f"export {export_id} to {row['format']}: {len(row['files'])} file(s)"
                else:
                    level, message = "warning", f"export {export_id} to {row['format']} failed: {error}"
                self._add_event(conn, job, "platform", level, f"export_{state}", message,
                                {"export_id": export_id, "format": row["format"], "files": row["files"],
                                 "error": error})
        return row
