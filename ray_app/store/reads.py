"""The read side of the job database: jobs, lists and histories, served by SQL outside the writer.

The JobStore actor is the single writer (store/core.py) and runs one call at a time: a read served
there (a long page of logs, a list over every job ever created) delays every heartbeat behind it.
Reads need no such serialization: each statement sees a committed state of the database (SQLite in
WAL mode lets readers run beside the writer; PostgreSQL is MVCC). So the API reads here, with its
own engine on the same database (JobReader), and the store's own read methods use the same
functions on its engine, so both return exactly the same dictionaries (DESIGN §11).

Lists filter and page IN SQL, newest first, on the `num` cursor: the primary key walked backwards,
or the ix_jobs_state / ix_jobs_project_id / ix_jobs_framework index of a filter (on SQLite each of
those holds the rowid, which `num` is, so it serves the filter, the order and the cursor at once).
An id search (`id_prefix`) is a LIKE on the id, its wildcards escaped, and the same prefix compared
exactly (SQLite's LIKE ignores case; PostgreSQL's does not): the same jobs on both.

What changed since a position (`changed_jobs`, the job-list stream, api/routes/stream.py) is read
in the order of (updated_at, num) on ix_jobs_updated_at: every write to a job row sets its
updated_at, and the single writer commits one transaction after the other, so a row committed
later never carries an earlier updated_at than one a reader has already seen (as long as the
writer's clock does not step back).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, func, select, tuple_
from sqlalchemy.engine import Connection, Engine

from ray_app.jobs.errors import JobNotFound
from ray_app.jobs.job import Job
from ray_app.jobs.states import JobState
from ray_app.store import attempts, db
from ray_app.store.log_archive import LogArchive

T = TypeVar("T")

Row = dict[str, Any]
Position = tuple[datetime, int]  # (updated_at, num) of a job row: where a change stream stands


# ---------------------------------------------------------------- shaping (shared with the store)


def with_history(job: Row, history: list[Row]) -> Row:
    """The job as reads return it (the store's and the reader's, one shape): its row and its
    ended attempts, oldest first, as the API shows them, and `output_complete`: whether the
    current attempt's output is all stored. `history`
    is the job's attempt rows (store/attempts.py)."""
    shaped = {**job, "attempts": [{k: v for k, v in row.items() if k != "job_id"}
                                  for row in history if row["ended_at"] is not None]}
    current = next((r for r in history if r["attempt"] == job["attempt"]), None)
    shaped["output_complete"] = bool(current and current["output_complete"])
    shaped["ranks"] = attempts.ranks_of(current) if current is not None else []
    return shaped


def not_found(job_id: str) -> JobNotFound:
    return JobNotFound(f"job {job_id} not found")


# ---------------------------------------------------------------- statements on a connection


def job_row(conn: Connection, job_id: str) -> Row | None:
    row = conn.execute(select(db.jobs).where(db.jobs.c.id == job_id)).first()
    return dict(row._mapping) if row is not None else None


def attempt_rows(conn: Connection, job_ids: Iterable[str] | Select) -> dict[str, list[Row]]:
    """The attempt rows of each job (oldest first), by job id; jobs without any are absent.
    `job_ids`: ids, or a SELECT of them."""
    ids = job_ids if isinstance(job_ids, Select) else list(dict.fromkeys(job_ids))
    history: dict[str, list[Row]] = {}
    if isinstance(ids, list) and not ids:
        return history
    stmt = (select(db.attempts).where(db.attempts.c.job_id.in_(ids))
            .order_by(db.attempts.c.job_id, db.attempts.c.attempt))
    for row in db.rows(conn.execute(stmt)):
        history.setdefault(row["job_id"], []).append(row)
    return history


def get_job(conn: Connection, job_id: str) -> Row:
    job = job_row(conn, job_id)
    if job is None:
        raise not_found(job_id)
    return with_history(job, attempt_rows(conn, [job_id]).get(job_id, []))


def require_job(conn: Connection, job_id: str) -> None:
    if conn.execute(select(db.jobs.c.num).where(db.jobs.c.id == job_id)).first() is None:
        raise not_found(job_id)


def list_jobs(conn: Connection, state: str | None = None, project_id: str | None = None,
              framework: str | None = None, cursor: int | None = None,
              limit: int = 50, id_prefix: str | None = None,
              projects: list[str] | None = None, sweep_id: str | None = None) -> tuple[list[Row], int | None]:
    """Newest first; `cursor` is the `num` of the last job of the previous page; the next cursor
    is None on the last page; `id_prefix`: only the jobs whose id starts with it (taken literally:
    `_` and `%` are no wildcards). One statement for the page (one row more than asked, to know
    whether another page follows) and one for its jobs' attempts. `projects`: only the jobs of
    these projects (the caller's, teams/policy.py); None: every project. `sweep_id`: only that
    sweep's trials."""
    stmt = select(db.jobs)
    if sweep_id is not None:
        stmt = stmt.where(db.jobs.c.sweep_id == sweep_id)
    if projects is not None:
        stmt = stmt.where(db.jobs.c.project_id.in_(projects))
    if id_prefix is not None:
        stmt = stmt.where(db.jobs.c.id.startswith(id_prefix, autoescape=True),
                          func.substr(db.jobs.c.id, 1, len(id_prefix)) == id_prefix)
    if state is not None:
        stmt = stmt.where(db.jobs.c.state == str(getattr(state, "value", state)))
    if project_id is not None:
        stmt = stmt.where(db.jobs.c.project_id == project_id)
    if framework is not None:
        stmt = stmt.where(db.jobs.c.framework == framework)
    if cursor is not None:
        stmt = stmt.where(db.jobs.c.num < cursor)
    found = db.rows(conn.execute(stmt.order_by(db.jobs.c.num.desc()).limit(limit + 1)))
    page = found[:limit]
    next_cursor = page[-1]["num"] if len(found) > limit else None
    return _shaped(conn, page), next_cursor


def changed_jobs(conn: Connection, after: Position, limit: int = 200) -> list[Row]:
    """The jobs whose row changed after `after`, oldest change first: in the order of
    (updated_at, num), strictly after it (a row value comparison, on SQLite and PostgreSQL alike),
    each as get_job returns it. A job appears once, where its last change puts it."""
    key = tuple_(db.jobs.c.updated_at, db.jobs.c.num)
    stmt = (select(db.jobs).where(key > tuple(after))
            .order_by(db.jobs.c.updated_at, db.jobs.c.num).limit(limit))
    return _shaped(conn, db.rows(conn.execute(stmt)))


def last_change(conn: Connection) -> Position | None:
    """The newest (updated_at, num) of the jobs table; None when it has no jobs."""
    row = conn.execute(select(db.jobs.c.updated_at, db.jobs.c.num)
                       .order_by(db.jobs.c.updated_at.desc(), db.jobs.c.num.desc()).limit(1)).first()
    return (row[0], row[1]) if row is not None else None


def _shaped(conn: Connection, page: list[Row]) -> list[Row]:
    """Job rows with their attempts (one statement for all of them)."""
    history = attempt_rows(conn, [job["id"] for job in page])
    return [with_history(job, history.get(job["id"], [])) for job in page]


def events(conn: Connection, job_id: str, after: int = 0, limit: int = 500) -> list[Row]:
    require_job(conn, job_id)
    return db.rows(conn.execute(
        select(db.events).where(db.events.c.job_id == job_id, db.events.c.seq > after)
        .order_by(db.events.c.seq).limit(limit)))


def metrics(conn: Connection, job_id: str) -> list[Row]:
    require_job(conn, job_id)
    return db.rows(conn.execute(
        select(db.metrics).where(db.metrics.c.job_id == job_id)
        .order_by(db.metrics.c.attempt, db.metrics.c.epoch)))


def logs(conn: Connection, job_id: str, after: int = 0, limit: int = 1000,
         archive: LogArchive | None = None) -> list[Row]:
    """Lines after `after`, in order. Seqs are contiguous, and the database holds a job's newest
    lines: a first row past `after + 1` means the lines between were moved to S3
    (store/log_archive.py), read from there (with the database's rows after them, up to `limit`)."""
    require_job(conn, job_id)
    rows = db.rows(conn.execute(
        select(db.logs).where(db.logs.c.job_id == job_id, db.logs.c.seq > after)
        .order_by(db.logs.c.seq).limit(limit)))
    if archive is not None and rows and rows[0]["seq"] > after + 1:
        older = archive.read(job_id, after, limit, before=rows[0]["seq"])
        if older and older[-1]["seq"] == rows[0]["seq"] - 1:
            return older + rows[:limit - len(older)]
        return older
    return rows


# ---------------------------------------------------------------- the reader


class JobReader:
    """Reads on an engine of its own (created on first use), blocking: call it from a thread
    (AsyncJobReader does). Returns exactly what the store's read methods return; with `archive`
    (S3 configured), a log's lines moved to S3 too."""

    def __init__(self, database_url: str, engine: Engine | None = None, archive: LogArchive | None = None):
        self.database_url = database_url
        self.archive = archive
        self._engine = engine
        self._lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = db.make_engine(self.database_url)
        return self._engine

    def run(self, statement: Callable[..., T], *args: Any) -> T:
        """Any read function of the store's (`fn(conn, *args)`: this module's, store/datasets.py,
        store/sweeps.py) on this reader's engine."""
        with self.engine.connect() as conn:
            return statement(conn, *args)

    def get_job(self, job_id: str) -> Row:
        with self.engine.connect() as conn:
            return get_job(conn, job_id)

    def list_jobs(self, state: str | None = None, project_id: str | None = None,
                  framework: str | None = None, cursor: int | None = None,
                  limit: int = 50, id_prefix: str | None = None,
                  projects: list[str] | None = None, sweep_id: str | None = None) -> tuple[list[Row], int | None]:
        with self.engine.connect() as conn:
            return list_jobs(conn, state, project_id, framework, cursor, limit, id_prefix, projects, sweep_id)

    def changed_jobs(self, after: Position, limit: int = 200) -> list[Row]:
        with self.engine.connect() as conn:
            return changed_jobs(conn, after, limit)

    def last_change(self) -> Position | None:
        with self.engine.connect() as conn:
            return last_change(conn)

    def events(self, job_id: str, after: int = 0, limit: int = 500) -> list[Row]:
        with self.engine.connect() as conn:
            return events(conn, job_id, after, limit)

    def metrics(self, job_id: str) -> list[Row]:
        with self.engine.connect() as conn:
            return metrics(conn, job_id)

    def logs(self, job_id: str, after: int = 0, limit: int = 1000) -> list[Row]:
        with self.engine.connect() as conn:
            return logs(conn, job_id, after, limit, self.archive)

    def exports(self, job_id: str) -> list[Row]:
        from ray_app.store import exports

        return self.run(exports.list_exports, job_id)

    def export(self, job_id: str, export_id: str) -> Row:
        from ray_app.store import exports

        return self.run(exports.export_row, job_id, export_id)

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


class AsyncJobReader:
    """The API's reads: JobReader's, each in a worker thread (never on the event loop), with
    the StoreClient's signatures and types (jobs as `Job`), so a route reads here or there alike."""

    def __init__(self, reader: JobReader):
        self.reader = reader

    async def get_job(self, job_id: str) -> Job:
        return Job.model_validate(await asyncio.to_thread(self.reader.get_job, job_id))

    async def list_jobs(self, state: JobState | None = None, project_id: str | None = None,
                        framework: str | None = None, cursor: int | None = None,
                        limit: int = 50, id_prefix: str | None = None,
                        projects: list[str] | None = None,
                        sweep_id: str | None = None) -> tuple[list[Job], int | None]:
        rows, next_cursor = await asyncio.to_thread(
            self.reader.list_jobs, state.value if state else None, project_id, framework, cursor, limit,
            id_prefix, projects, sweep_id)
        return [Job.model_validate(r) for r in rows], next_cursor

    async def changed_jobs(self, after: Position, limit: int = 200) -> list[Job]:
        return [Job.model_validate(r) for r in await asyncio.to_thread(self.reader.changed_jobs, after, limit)]

    async def last_change(self) -> Position | None:
        return await asyncio.to_thread(self.reader.last_change)

    async def events(self, job_id: str, after: int = 0, limit: int = 500) -> list[Row]:
        return await asyncio.to_thread(self.reader.events, job_id, after, limit)

    async def metrics(self, job_id: str) -> list[Row]:
        return await asyncio.to_thread(self.reader.metrics, job_id)

    async def logs(self, job_id: str, after: int = 0, limit: int = 1000) -> list[Row]:
        return await asyncio.to_thread(self.reader.logs, job_id, after, limit)

    async def exports(self, job_id: str) -> list[Row]:
        """The job's exports, newest first (store/exports.py)."""
        return await asyncio.to_thread(self.reader.exports, job_id)

    async def export(self, job_id: str, export_id: str) -> Row:
        return await asyncio.to_thread(self.reader.export, job_id, export_id)
