"""The single writer's memory and transactions, under the store's operations (store/core.py).

Memory holds the live jobs only (not yet SUCCEEDED, FAILED or CANCELLED): a job leaves it once
its final transition is committed, and an operation on a final job (a late callback, a repeated
done or cancel, the controller's last look) reads its row from the database on demand. Every
change goes through `_tx` (a transaction whose failure also undoes the change in memory) and a
state change through `_transition`, the compare-and-set on the state machine's table.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import delete, select, update

from ray_app.jobs.errors import Conflict
from ray_app.jobs.states import JobState, check_transition
from ray_app.jobs.types import non_finite
from ray_app.store import attempts, db, reads

log = logging.getLogger("ray_app.store")

_LIVE_STATES = tuple(s.value for s in JobState if not s.is_terminal)
_ABSENT = object()


class Writer:
    """The store's state and its transactions; the operations are in its subclasses."""

    def __init__(self, database_url: str, default_max_attempts: int = 3):
        self.engine = db.make_engine(database_url)
        self.default_max_attempts = default_max_attempts
        self._jobs: dict[str, dict[str, Any]] = {}
        self._event_seq: dict[str, int] = {}
        self._log_seq: dict[str, int] = {}
        self._batch_conn: Any = None  # set while apply_callbacks runs: items share its transaction
        # job id -> [attempt, highest metrics epoch, last epoch written, its metrics] (store/bulk.py)
        self._metrics_hint: dict[str, list[Any]] = {}
        self._attempts: dict[str, attempts.History] = {}  # job id -> its attempts' rows
        self.reload()

    # ------------------------------------------------------------------ loading

    def reload(self) -> None:
        """Rebuild the in-memory view of the live jobs from the database (start-up, after a
        restart); final jobs stay in the database."""
        live = select(db.jobs.c.id).where(db.jobs.c.state.in_(_LIVE_STATES))
        with self.engine.connect() as conn:
            self._jobs = {r["id"]: r for r in db.rows(conn.execute(
                select(db.jobs).where(db.jobs.c.state.in_(_LIVE_STATES))))}
            self._event_seq = db.max_seq(conn, db.events, live)  # type: ignore[arg-type]
            self._log_seq = db.max_seq(conn, db.logs, live)  # type: ignore[arg-type]
            self._attempts = reads.attempt_rows(conn, live)
        self._metrics_hint = {}
        log.info("job store loaded %d live jobs", len(self._jobs))

    def _job(self, job_id: str) -> dict[str, Any]:
        job = self._jobs.get(job_id)
        if job is None:
            job = self._load(job_id)
            if job is None:
                raise reads.not_found(job_id)
        return job

    def _load(self, job_id: str) -> dict[str, Any] | None:
        """A job that is not in memory, from the database: a final job's row, returned and not
        kept (an operation on it reads what it needs, and _tx lets go of it after). A live one
        not in memory (never expected: this is the only writer) is taken into memory."""
        if self._batch_conn is not None:
            job = reads.job_row(self._batch_conn, job_id)
        else:
            with self.engine.connect() as conn:
                job = reads.job_row(conn, job_id)
        if job is not None and not JobState(job["state"]).is_terminal:
            with self.engine.connect() as conn:
                history = reads.attempt_rows(conn, [job_id]).get(job_id)
            if history:
                self._attempts[job_id] = history
            self._jobs[job_id] = job
        return job

    def _history(self, job_id: str, conn: Any = None) -> attempts.History:
        """The job's attempt rows: in memory for a live job (or one this transaction changed),
        else from the database (with `conn`, inside its transaction)."""
        history = self._attempts.get(job_id)
        if history is not None:
            return history
        if job_id in self._jobs:
            return []
        if conn is not None:
            return reads.attempt_rows(conn, [job_id]).get(job_id, [])
        with self.engine.connect() as c:
            return reads.attempt_rows(c, [job_id]).get(job_id, [])

    def _forget(self, job_id: str) -> None:
        """A final job leaves memory (its transition is committed)."""
        for held in (self._jobs, self._event_seq, self._log_seq, self._attempts, self._metrics_hint):
            held.pop(job_id, None)

    def forget_final(self, job_ids: Any) -> None:
        """After a batch's commit (store/bulk.py): its jobs that are now final leave memory."""
        for job_id in job_ids:
            job = self._jobs.get(job_id)
            if job is not None and JobState(job["state"]).is_terminal:
                self._forget(job_id)

    # ------------------------------------------------------------------ internals

    @contextmanager
    def _tx(self, job: dict[str, Any]) -> Iterator[Any]:
        """A database transaction whose failure also undoes the in-memory changes to `job`.
        Once it is committed, a job that is final leaves memory (one read from the database for
        this operation leaves it at once); inside a batch, after the batch's commit."""
        snapshot = dict(job)
        job_id = job["id"]
        held: list[tuple[dict[str, Any], Any]] = [(d, d.get(job_id, _ABSENT)) for d in (self._event_seq, self._log_seq, self._attempts)]
        try:
            if self._batch_conn is not None:  # inside apply_callbacks: a savepoint of its transaction
                with self._batch_conn.begin_nested():
                    yield self._batch_conn
            else:
                with self.engine.begin() as conn:
                    yield conn
        except BaseException:
            job.clear()
            job.update(snapshot)
            for d, value in held:
                if value is _ABSENT:
                    d.pop(job_id, None)
                else:
                    d[job_id] = value
            raise
        if self._jobs.get(job_id) is not job:  # not held: read for this operation only
            for d, _ in held:
                d.pop(job_id, None)
        elif self._batch_conn is None and JobState(job["state"]).is_terminal:
            self._forget(job_id)

    def _set(self, conn, job: dict[str, Any], **fields: Any) -> None:
        fields["updated_at"] = db.utcnow()
        conn.execute(update(db.jobs).where(db.jobs.c.id == job["id"]).values(**fields))
        job.update(fields)

    def _transition(self, conn, job: dict[str, Any], target: JobState, reason: str,
                    ended: dict[str, Any] | None = None, **fields: Any) -> None:
        current = JobState(job["state"])
        check_transition(job["id"], current, target)
        now = db.utcnow()
        if target == JobState.QUEUED:
            fields.setdefault("queued_at", now)
        if target.is_terminal:
            fields.setdefault("finished_at", now)
        if target != JobState.QUEUED:  # it waits no more
            fields.setdefault("wait_reason", None)
            fields.setdefault("retry_at", None)
        if target in (JobState.SUCCEEDED, JobState.CANCELLED):
            # the job's error describes its outcome; earlier attempts' errors are in their history
            fields.update(error=None, error_type=None, traceback=None)
        # compare-and-set on the row as well: the database refuses a lost race, not only memory
        result = conn.execute(
            update(db.jobs)
            .where(db.jobs.c.id == job["id"], db.jobs.c.state == current.value,
                   db.jobs.c.attempt == job["attempt"])
            .values(state=target.value, updated_at=now, **fields)
        )
        if result.rowcount != 1:
            raise Conflict(f"job {job['id']} changed underneath; transition to {target.value} refused")
        if target.is_terminal and current != JobState.PENDING:  # an attempt that was queued ends
            self._attempts[job["id"]] = attempts.close(conn, self._history(job["id"], conn), job,
                                                       target.value.lower(), reason, fields.get("error_type"), ended)
        if target.is_terminal or fields.get("attempt", job["attempt"]) != job["attempt"]:
            # the attempt is over: its callbacks' idempotency keys have done their work (a late
            # callback of it is refused as a stale attempt, or by the final job; a repeated done
            # is recognised by the stored done body), so the table holds live attempts' keys only
            conn.execute(delete(db.callback_keys).where(db.callback_keys.c.job_id == job["id"]))
        job.update(fields, state=target.value, updated_at=now)
        level = "error" if target == JobState.FAILED else "info"
        self._add_event(conn, job, "platform", level, "state_changed",
                        f"{current.value} -> {target.value}: {reason}",
                        {"from": current.value, "to": target.value, "reason": reason})
        log.info("[TRACE:%s] job %s %s -> %s: %s", job["trace_id"], job["id"], current.value,
                 target.value, reason)

    def _warn_non_finite(self, conn, job: dict[str, Any], metrics: dict[str, Any], epoch: int | None) -> None:
        """A metric that turns NaN or infinite is news (training diverged): one warning event
        when it turns, not one per heartbeat while it stays so."""
        turned = {name: value for name, value in non_finite(metrics).items()
                  if job["latest_metrics"].get(name) != value}
        if turned:
            named = ", ".join(f"{name} = {value}" for name, value in sorted(turned.items()))
            at = f" at epoch {epoch}" if epoch is not None else ""
            self._add_event(conn, job, "platform", "warning", "metric_non_finite",
                            f"non-finite metric{at}: {named} (training may have diverged)",
                            {"metrics": turned, "epoch": epoch})

    def _add_event(self, conn, job, source, level, event_type, message, data) -> None:
        seq = self._event_seq.get(job["id"])
        if seq is None:  # a job not in memory (final, or just created)
            seq = db.max_seq(conn, db.events, [job["id"]]).get(job["id"], 0)
        seq += 1
        conn.execute(db.events.insert().values(
            job_id=job["id"], seq=seq, attempt=job["attempt"], level=level, event_type=event_type,
            message=message, data=data, source=source, created_at=db.utcnow(),
        ))
        self._event_seq[job["id"]] = seq
