"""A batch of trainer callbacks applied in one transaction (JobStoreCore.apply_callbacks).

Heartbeats are the platform's high-rate writes. Applied one by one (the profile in bench/README.md),
each cost a savepoint, an idempotency-key INSERT, a metrics SELECT and upsert and a job-row UPDATE,
mostly SQLAlchemy building statements. Here a heartbeat that cannot fail once its key is new (a
valid body for a known RUNNING job, on the token's attempt) is checked and applied in memory, and
the batch writes with a few executions of statements built once: one INSERT ... RETURNING of all
keys (the rows that come back are the new keys, the others are retries), one metrics upsert of
already-merged rows, and one UPDATE per job with its final values. Everything else (events, a
heartbeat that moves a QUEUED job to RUNNING or is refused) goes through the store's own method
in a savepoint, as before; the pending heartbeats' keys are written before it, so an item always
sees the keys of the items before it. The results are the same, item for item, as calling the
methods one at a time.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sdk import contract

from ray_app.jobs import recovery
from ray_app.jobs.callback_models import HeartbeatIn
from ray_app.jobs.errors import Conflict, StoreError
from ray_app.jobs.states import JobState
from ray_app.jobs.types import non_finite
from ray_app.store import db

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from ray_app.store.core import JobStoreCore

log = logging.getLogger("ray_app.store")

_RUNNING = JobState.RUNNING.value

# (index in the batch, job row in memory, attempt, body, idempotency key)
_Item = tuple[int, dict[str, Any], int, HeartbeatIn, str | None]


def is_behind(job: dict[str, Any], hb: HeartbeatIn) -> bool:
    """A heartbeat older than what the job already shows (a retried or reordered delivery):
    within an attempt, progress never goes back. A new attempt starts from a clean slate
    (JobStoreCore.requeue), so it may legitimately report less than the last one did."""
    if hb.epoch is None or job["epoch"] is None:
        return False
    if hb.epoch != job["epoch"]:
        return hb.epoch < job["epoch"]
    return hb.step is not None and job["step"] is not None and hb.step < job["step"]


def heartbeat_changes(job: dict[str, Any], hb: HeartbeatIn, now: Any) -> dict[str, Any]:
    """What a heartbeat changes on a RUNNING job's row (the one rule for both write paths)."""
    changes: dict[str, Any] = {"last_heartbeat_at": now}
    if is_behind(job, hb):
        return changes  # alive, but what it reports is already superseded
    if (hb.epoch, hb.step) != (job["epoch"], job["step"]) or job["last_progress_at"] is None:
        changes["last_progress_at"] = now  # progress: what the stall timeout watches
    for name in contract.HEARTBEAT_OVERRIDES:
        value = getattr(hb, name)
        if value is not None:
            changes[name] = value
    progress = hb.progress
    if progress is None and hb.epoch is not None and hb.total_epochs:
        progress = round(100.0 * hb.epoch / hb.total_epochs, 2)
    if progress is not None:
        changes["progress"] = max(progress, job["progress"] or 0.0)
    if hb.metrics:
        changes["latest_metrics"] = {**job["latest_metrics"], **hb.metrics}
    return changes


def callback_key(kind: str, attempt: int, event_id: str | None, seq: int | None) -> str | None:
    if event_id:
        return f"{kind}:{event_id}"
    if seq is not None:
        return f"{kind}:{attempt}:{seq}"
    return None


def apply_callbacks(core: JobStoreCore, items: list[tuple[str, str, int, dict[str, Any]]]) -> list[Any]:
    """See JobStoreCore.apply_callbacks."""
    results: list[Any] = [None] * len(items)
    snapshots: dict[str, tuple[dict[str, Any], int, list[dict[str, Any]]]] = {}
    try:
        with core.engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                # pysqlite opens its transaction lazily, at the first INSERT/UPDATE; a SAVEPOINT
                # issued before that would start (and its RELEASE commit) a transaction of its own
                conn.exec_driver_sql("BEGIN")
            core._batch_conn = conn
            batch = HeartbeatBatch(core, conn)
            for index, (kind, job_id, token_attempt, body) in enumerate(items):
                job = core._jobs.get(job_id)
                if job is not None and job_id not in snapshots:
                    snapshots[job_id] = (dict(job), core._event_seq.get(job_id, 0),
                                         list(core._attempts.get(job_id, ())))
                if kind == "heartbeat" and batch.add(index, job, token_attempt, body):
                    continue
                batch.flush(results)  # the items before this one are applied first
                try:
                    apply = {"heartbeat": core.heartbeat, "event": core.event, "done": core.done}.get(kind)
                    if apply is None:
                        raise Conflict(f"{kind!r} cannot be applied in a callback batch")
                    results[index] = apply(job_id, token_attempt, body)
                except StoreError as exc:
                    results[index] = exc
                except Exception as exc:  # isolated like a StoreError; reported as a 500
                    log.exception("callback %s for job %s failed", kind, job_id)
                    results[index] = RuntimeError(f"{type(exc).__name__}: {exc}")
            batch.flush(results)
            batch.write()
            core._batch_conn = None
    except BaseException:
        core._batch_conn = None
        for job_id, (snapshot, seq, history) in snapshots.items():
            job = core._jobs[job_id]
            job.clear()
            job.update(snapshot)
            core._event_seq[job_id] = seq
            core._attempts[job_id] = history
            core._metrics_hint.pop(job_id, None)  # it may describe rows that were not committed
        raise
    core.forget_final(snapshots)  # committed: a job the batch made final leaves memory
    return results


class HeartbeatBatch:
    """The fast-path heartbeats of one batch and the writes they still owe the database."""

    def __init__(self, core: JobStoreCore, conn: Connection):
        self.core = core
        self.conn = conn
        self.dialect = conn.dialect.name
        self.segment: list[_Item] = []
        self.metrics_rows: dict[tuple[str, int, int], dict[str, Any]] = {}
        self.dirty: dict[str, dict[str, Any]] = {}

    def add(self, index: int, job: dict[str, Any] | None, attempt: int, body: dict[str, Any]) -> bool:
        """Take a heartbeat that is applied for sure unless its key was seen; False leaves it to
        the store's `heartbeat` (errors, the QUEUED -> RUNNING transition), which says why."""
        if job is None or job["state"] != _RUNNING or job["attempt"] != attempt:
            return False
        try:
            hb = HeartbeatIn.model_validate(body)
        except Exception:
            return False
        if non_finite(hb.metrics):
            return False  # may owe a warning event: the store's own method writes it
        self.segment.append((index, job, attempt, hb, callback_key("hb", attempt, hb.event_id, hb.seq)))
        return True

    def flush(self, results: list[Any]) -> None:
        """Record the segment's keys (one statement) and apply its new heartbeats in memory."""
        if not self.segment:
            return
        now = db.utcnow()
        pairs = dict.fromkeys((job["id"], key) for _, job, _, _, key in self.segment if key is not None)
        new: set[tuple[str, str]] = set()
        if pairs:
            rows = self.conn.execute(
                db.insert_keys_stmt(self.dialect),
                [{"job_id": job_id, "key": key, "created_at": now} for job_id, key in pairs],
            )
            new = {(row[0], row[1]) for row in rows}
        for index, job, attempt, hb, key in self.segment:
            if key is not None:
                pair = (job["id"], key)
                if pair not in new:  # applied before, or earlier in this batch
                    results[index] = {"should_continue": recovery.keeps_going(job), "duplicate": True}
                    continue
                new.discard(pair)
            self._apply(job, attempt, hb, now)
            results[index] = {"should_continue": recovery.keeps_going(job), "duplicate": False}
        self.segment.clear()

    def write(self) -> None:
        """The batch's metrics rows and job rows, each written once with its final value."""
        if self.metrics_rows:
            self.conn.execute(db.upsert_metrics_stmt(self.dialect), list(self.metrics_rows.values()))
        if self.dirty:
            self.conn.execute(db.update_heartbeat_stmt, [
                {"_id": job["id"], **{f"v_{name}": job[name] for name in db.HEARTBEAT_COLUMNS}}
                for job in self.dirty.values()
            ])

    def _apply(self, job: dict[str, Any], attempt: int, hb: HeartbeatIn, now: Any) -> None:
        changes = {**heartbeat_changes(job, hb, now), "updated_at": now}
        if hb.metrics and hb.epoch is not None:
            self._merge_metrics(job["id"], attempt, hb.epoch, hb.step, hb.metrics, now)
        job.update(changes)
        self.dirty[job["id"]] = job

    def _merge_metrics(self, job_id: str, attempt: int, epoch: int, step: int | None,
                       values: dict[str, Any], now: Any) -> None:
        """Metrics are kept per (attempt, epoch): a later heartbeat for the epoch merges into it."""
        row = self.metrics_rows.get((job_id, attempt, epoch))
        if row is None:
            row = {"job_id": job_id, "attempt": attempt, "epoch": epoch,
                   "metrics": self._stored_metrics(job_id, attempt, epoch)}
            self.metrics_rows[(job_id, attempt, epoch)] = row
        row.update(metrics={**row["metrics"], **values}, step=step, updated_at=now)
        hint = self.core._metrics_hint[job_id]
        hint[1] = max(hint[1], epoch)
        hint[2], hint[3] = epoch, row["metrics"]

    def _stored_metrics(self, job_id: str, attempt: int, epoch: int) -> dict[str, Any]:
        """The row's metrics in the database, without a query in the usual cases: the store keeps
        per job [attempt, highest epoch with a row, last epoch written, its metrics]. A new epoch
        above the highest has no row; the last one written is in memory."""
        hint = self.core._metrics_hint.get(job_id)
        if hint is None or hint[0] != attempt:
            highest = self.conn.execute(
                db.max_metrics_epoch_stmt, {"job_id": job_id, "attempt": attempt}).scalar()
            hint = self.core._metrics_hint[job_id] = [attempt, -1 if highest is None else highest,
                                                      None, None]
        if epoch > hint[1]:
            return {}
        if hint[2] == epoch:
            return dict(hint[3])
        stored = self.conn.execute(
            db.metrics_row_stmt, {"job_id": job_id, "attempt": attempt, "epoch": epoch}
        ).scalar_one_or_none()
        return dict(stored or {})
