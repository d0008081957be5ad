"""JobStoreCore: every change to a job goes through here, written through to the database.

The JobStore actor (store/actor.py) wraps one instance; being the only writer is what makes the
compare-and-set transitions and the idempotency checks race-free. This class has no Ray in it,
so it is tested directly as well as through the actor.

Memory holds the live jobs only (not yet SUCCEEDED, FAILED or CANCELLED): a job leaves it once
its final transition is committed, and an operation on a final job (a late callback, a repeated
done or cancel, the controller's last look) reads its row from the database on demand. The API
reads jobs, lists and histories without this class (store/reads.py); its own read methods use
the same functions, so both return the same dictionaries.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import delete, select, update

from sdk import contract
from sdk.contract import ErrorType

from ray_app.jobs.callback_models import DoneIn, EventIn, HeartbeatIn
from ray_app.jobs.errors import Conflict, StaleAttempt
from ray_app.jobs.job import Job
from ray_app.jobs.states import JobState, check_transition
from ray_app.jobs.types import non_finite, readable
from ray_app.runtime import recovery
from ray_app.runtime.recovery import Action
from ray_app.store import attempts, bulk, db, reads

log = logging.getLogger("ray_app.store")

_LIVE_STATES = tuple(s.value for s in JobState if not s.is_terminal)
_ABSENT = object()

JOB_DEFAULTS: dict[str, Any] = {
    "progress": 0.0,
    "latest_metrics": {},
    "final_metrics": {},
    "artifacts": {},
    "cancel_requested": False,
}


class JobStoreCore:
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

    # ------------------------------------------------------------------ jobs

    def create_job(self, spec: dict[str, Any], job_id: str | None = None) -> dict[str, Any]:
        """Create a job. With `job_id` (chosen by the caller) a repeated call returns the job
        created the first time, so a create retried after a store restart makes no twin."""
        if job_id is not None:
            existing = self._jobs.get(job_id) or self._load(job_id)
            if existing is not None:
                return dict(existing)
        now = db.utcnow()
        job = {
            **JOB_DEFAULTS,
            **spec,
            "id": job_id or uuid.uuid4().hex[:16],
            "trace_id": str(uuid.uuid4()),
            "state": JobState.PENDING.value,
            "attempt": 1,
            "max_attempts": spec.get("max_attempts") or self.default_max_attempts,
            "created_at": now,
            "updated_at": now,
        }
        job["task_type"] = str(getattr(job["task_type"], "value", job["task_type"]))
        with self.engine.begin() as conn:
            conn.execute(db.jobs.insert().values(**job))
            # read the row back: memory holds exactly what the database holds, every column
            job = dict(conn.execute(select(db.jobs).where(db.jobs.c.id == job["id"])).one()._mapping)
            self._add_event(conn, job, "platform", "info", "created", "job created", {})
        self._jobs[job["id"]] = job
        log.info("[TRACE:%s] job %s created (%s/%s)", job["trace_id"], job["id"],
                 job["framework"], job["model_name"])
        return dict(job)

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._with_history(self._job(job_id))

    def _with_history(self, job: dict[str, Any]) -> dict[str, Any]:
        """The job as reads return it (reads.with_history, the one shape for the store and the
        reader): its row, its ended attempts, and whether the current attempt's output is all
        stored."""
        return reads.with_history(job, self._history(job["id"]))

    def list_jobs(
        self,
        state: str | None = None,
        project_id: str | None = None,
        framework: str | None = None,
        cursor: int | None = None,
        limit: int = 50,
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Newest first; `cursor` is the `num` of the last job of the previous page. In SQL
        (reads.list_jobs): memory holds the live jobs only."""
        with self.engine.connect() as conn:
            return reads.list_jobs(conn, state, project_id, framework, cursor, limit)

    def active_jobs(self) -> list[dict[str, Any]]:
        return [dict(j) for j in self._jobs.values() if not JobState(j["state"]).is_terminal]

    def request_cancel(self, job_id: str) -> dict[str, Any]:
        """Idempotent. A job that has not started is cancelled at once; a running one is asked
        to stop (the next heartbeat answers should_continue=false) and the controller marks it
        CANCELLED once its process tree is gone."""
        job = self._job(job_id)
        state = JobState(job["state"])
        if state.is_terminal or job["cancel_requested"]:
            return dict(job)
        with self._tx(job) as conn:
            self._set(conn, job, cancel_requested=True, cancel_requested_at=db.utcnow())
            self._add_event(conn, job, "platform", "info", "cancel_requested", "cancel requested", {})
            if state == JobState.PENDING:
                self._transition(conn, job, JobState.CANCELLED, "cancelled before it was queued")
        return self._with_history(job)

    # ------------------------------------------------------------------ controller side

    def transition(
        self,
        job_id: str,
        target: str,
        reason: str,
        attempt: int | None = None,
        error_type: str | None = None,
        ended: dict[str, Any] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Compare-and-set: refused (Conflict) when the table forbids it or, with `attempt`,
        when the job has moved on to another attempt meanwhile."""
        job = self._job(job_id)
        if attempt is not None and job["attempt"] != attempt:
            raise Conflict(f"job {job_id} is on attempt {job['attempt']}, not {attempt}")
        target_state = JobState(target)
        with self._tx(job) as conn:
            if target_state == JobState.FAILED:
                fields.setdefault("error", reason)
                fields.setdefault("error_type", error_type or ErrorType.UNKNOWN_ERROR.value)
            self._transition(conn, job, target_state, reason, ended=ended, **fields)
        return self._with_history(job)

    def requeue(self, job_id: str, attempt: int, reason: str, error_type: str,
                ended: dict[str, Any] | None = None) -> dict[str, Any]:
        """Start the next attempt after `attempt` failed, resuming from the last checkpoint.
        Compare-and-set: refused unless the job is still on `attempt` and has one left (whether
        to retry is the recovery policy's call, runtime/recovery.py)."""
        job = self._job(job_id)
        if job["attempt"] != attempt:
            raise Conflict(f"job {job_id} is on attempt {job['attempt']}, not {attempt}")
        if job["attempt"] >= job["max_attempts"]:
            raise Conflict(f"job {job_id} has no attempts left ({attempt} of {job['max_attempts']})")
        with self._tx(job) as conn:
            self._attempts[job_id] = attempts.close(conn, self._history(job_id, conn), job, "retried",
                                                    reason, error_type, ended)
            self._transition(
                conn, job, JobState.QUEUED, f"retrying after attempt {attempt} failed: {reason}",
                attempt=attempt + 1, resume_from=job["last_checkpoint"] or job["resume_from"],
                done=None, error=reason, error_type=error_type, last_heartbeat_at=None,
                last_progress_at=None, started_at=None,
                # the new attempt reports its own progress from where it resumes
                epoch=None, step=None, progress=0.0,
            )
            self._add_event(
                conn, job, "platform", "warning", "retry",
                f"attempt {attempt + 1} of {job['max_attempts']} starts"
                + (f", resuming from {job['resume_from']}" if job["resume_from"] else ""),
                {"previous_attempt": attempt, "reason": reason, "resume_from": job["resume_from"]},
            )
        return self._with_history(job)

    def attempt_started(self, job_id: str, attempt: int, node_id: str | None, pid: int, pgid: int) -> None:
        """The runner started the attempt's trainer process: where it runs, so that the
        controller can end it even if the runner dies."""
        job = self._job(job_id)
        with self._tx(job) as conn:
            self._attempts[job_id] = attempts.started(conn, self._history(job_id, conn), job_id, attempt,
                                                      node_id, pid, pgid)

    def attempt_process(self, job_id: str, attempt: int) -> dict[str, Any] | None:
        """Where the attempt's trainer process runs (node_id, pid, pgid), if it started."""
        self._job(job_id)
        return attempts.process(self._history(job_id), attempt)

    def attempt_exited(self, job_id: str, attempt: int, ended: dict[str, Any]) -> None:
        """The node and exit of an attempt whose row was closed before its process was gone."""
        job = self._job(job_id)
        with self._tx(job) as conn:
            self._attempts[job_id] = attempts.fill(conn, self._history(job_id, conn), job_id, attempt, ended)

    def add_platform_event(
        self, job_id: str, event_type: str, message: str, level: str = "info", data: dict | None = None
    ) -> None:
        job = self._job(job_id)
        with self._tx(job) as conn:
            self._add_event(conn, job, "platform", level, event_type, message, data or {})

    def append_logs(self, job_id: str, attempt: int, lines: list[tuple[str, str]], final: bool = False) -> int:
        """Store output lines; `final`: the attempt's last ones (its process has exited), recorded
        on its attempt row in the same transaction, so a reader knows it has everything."""
        job = self._job(job_id)
        if final:
            with self._tx(job) as conn:
                seq = self._write_logs(conn, job_id, attempt, lines)
                self._attempts[job_id] = attempts.output_complete(conn, self._history(job_id, conn),
                                                                  job_id, attempt)
        elif lines:
            with self.engine.begin() as conn:
                seq = self._write_logs(conn, job_id, attempt, lines)
        else:
            with self.engine.connect() as conn:
                return self._last_log_seq(conn, job_id)
        if job_id in self._jobs:  # a final job's next seq is read from the database
            self._log_seq[job_id] = seq  # once committed
        return seq

    def _last_log_seq(self, conn, job_id: str) -> int:
        seq = self._log_seq.get(job_id)
        if seq is None:
            seq = db.max_seq(conn, db.logs, [job_id]).get(job_id, 0)
        return seq

    def _write_logs(self, conn, job_id: str, attempt: int, lines: list[tuple[str, str]]) -> int:
        """Insert the lines after the job's last one; returns the new last seq."""
        seq = self._last_log_seq(conn, job_id)
        if not lines:
            return seq
        now = db.utcnow()
        values = []
        for stream, line in lines:
            seq += 1
            values.append({"job_id": job_id, "seq": seq, "attempt": attempt, "stream": stream,
                           # a trainer may print anything: a NUL would fail the write on PostgreSQL
                           "line": readable(line[:16384]), "created_at": now})
        conn.execute(db.logs.insert(), values)
        return seq

    # ------------------------------------------------------------------ trainer callbacks

    def check_attempt(self, job_id: str, token_attempt: int) -> dict[str, Any]:
        job = self._job(job_id)
        if token_attempt != job["attempt"]:
            raise StaleAttempt(
                f"callback token is for attempt {token_attempt}; the job is on attempt {job['attempt']}"
            )
        return job

    def heartbeat(self, job_id: str, token_attempt: int, body: dict[str, Any]) -> dict[str, Any]:
        hb = HeartbeatIn.model_validate(body)
        job = self.check_attempt(job_id, token_attempt)
        if JobState(job["state"]).is_terminal:
            raise Conflict(f"job {job_id} is {job['state']}; heartbeats are no longer accepted")
        key = bulk.callback_key("hb", token_attempt, hb.event_id, hb.seq)
        with self._tx(job) as conn:
            if key and not db.insert_key_once(conn, job_id, key):
                return {"should_continue": not job["cancel_requested"], "duplicate": True}
            if job["state"] == JobState.QUEUED.value:
                self._transition(conn, job, JobState.RUNNING, "first heartbeat", started_at=db.utcnow())
            elif job["state"] != JobState.RUNNING.value:
                raise Conflict(f"job {job_id} is {job['state']}; it has not been queued yet")
            changes = bulk.heartbeat_changes(job, hb, db.utcnow())
            if hb.metrics and hb.epoch is not None:
                db.upsert_metrics(conn, job_id, token_attempt, hb.epoch, hb.step, hb.metrics)
                self._metrics_hint.pop(job_id, None)  # written here, not by the batch path
            if "latest_metrics" in changes:  # a superseded heartbeat's metrics are not news
                self._warn_non_finite(conn, job, hb.metrics, hb.epoch)
            self._set(conn, job, **changes)
        return {"should_continue": not job["cancel_requested"], "duplicate": False}

    def event(self, job_id: str, token_attempt: int, body: dict[str, Any]) -> dict[str, Any]:
        ev = EventIn.model_validate(body)
        job = self.check_attempt(job_id, token_attempt)
        if JobState(job["state"]).is_terminal:
            raise Conflict(f"job {job_id} is {job['state']}; events are no longer accepted")
        key = bulk.callback_key("ev", token_attempt, ev.event_id, ev.seq)
        with self._tx(job) as conn:
            if key and not db.insert_key_once(conn, job_id, key):
                return {"duplicate": True}
            self._add_event(conn, job, "trainer", ev.level.value, ev.event_type, ev.message, ev.data)
            if ev.event_type == "started" and job["state"] == JobState.QUEUED.value:
                self._transition(conn, job, JobState.RUNNING, "trainer started", started_at=db.utcnow())
            if ev.event_type == contract.CHECKPOINT_SAVED:
                uri = ev.data.get(contract.CHECKPOINT_URI_KEY)
                name = ev.data.get(contract.CHECKPOINT_NAME_KEY)
                if isinstance(uri, str) and uri and (name != "best" or not job["last_checkpoint"]):
                    self._set(conn, job, last_checkpoint=uri)
        return {"duplicate": False}

    def done(self, job_id: str, token_attempt: int, body: dict[str, Any]) -> dict[str, Any]:
        d = DoneIn.model_validate(body)
        job = self.check_attempt(job_id, token_attempt)
        payload = d.model_dump(mode="json")
        previous = job["done"]
        if previous is not None:
            same_key = d.event_id is not None and d.event_id == previous.get("event_id")
            if same_key or _without_key(previous) == _without_key(payload):
                return {"state": job["state"], "duplicate": True}
            raise Conflict(f"job {job_id} already reported done for attempt {token_attempt}")
        state = JobState(job["state"])
        if state.is_terminal:
            raise Conflict(f"job {job_id} is {state.value}; done is no longer accepted")
        if state == JobState.PENDING:
            raise Conflict(f"job {job_id} is PENDING; it has not been queued yet")
        with self._tx(job) as conn:
            fields = {
                "done": payload,
                "final_metrics": payload["final_metrics"],
                "artifacts": {**job["artifacts"], **payload["artifacts"]},
                "mlflow_run_id": d.mlflow_run_id or job["mlflow_run_id"],
                "training_time_seconds": d.training_time_seconds,
            }
            if state == JobState.QUEUED:
                self._transition(conn, job, JobState.RUNNING, "done before started", started_at=db.utcnow())
            self._warn_non_finite(conn, job, payload["final_metrics"], job["epoch"])
            level = "info" if d.status == "succeeded" else "error"
            self._add_event(conn, job, "trainer", level, "done", d.error or d.status,
                            {"status": d.status, "error_type": payload["error_type"]})
            decision = recovery.on_done(Job.model_validate(job), d.status, d.error, payload["error_type"])
            if decision.action is Action.SUCCEED:
                self._transition(conn, job, JobState.SUCCEEDED, decision.reason, progress=100.0, **fields)
            elif decision.action is Action.FAIL:
                self._transition(conn, job, JobState.FAILED, decision.reason, error=decision.reason,
                                 error_type=decision.error_type, traceback=d.traceback, **fields)
            elif d.status == "failed":  # retried (or cancelled) once the process has exited
                self._set(conn, job, **fields, error=d.error, error_type=decision.error_type,
                          traceback=d.traceback)
            else:  # a success while cancelling: CANCELLED once the processes are gone
                self._set(conn, job, **fields)
        return {"state": job["state"], "duplicate": False}

    def apply_callbacks(self, items: list[tuple[str, str, int, dict[str, Any]]]) -> list[Any]:
        """Apply a batch of trainer callbacks `(kind, job_id, token_attempt, body)` in order, in
        ONE database transaction (one commit): heartbeats with bulk statements, other items each
        in its own savepoint (store/bulk.py). An item that fails writes nothing and changes
        nothing in memory, and its error (a StoreError: 404, 409, 401) is returned in its place;
        the others are applied. The results are returned only after the commit, so a result in
        the list means applied once and durable. If the commit itself fails, every in-memory
        change of the batch is undone and the call raises."""
        return bulk.apply_callbacks(self, items)

    # ------------------------------------------------------------------ histories

    def events(self, job_id: str, after: int = 0, limit: int = 500) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return reads.events(conn, job_id, after, limit)

    def metrics(self, job_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return reads.metrics(conn, job_id)

    def logs(self, job_id: str, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return reads.logs(conn, job_id, after, limit)

    # ------------------------------------------------------------------ internals

    @contextmanager
    def _tx(self, job: dict[str, Any]) -> Iterator[Any]:
        """A database transaction whose failure also undoes the in-memory changes to `job`.
        Once it is committed, a job that is final leaves memory (one read from the database for
        this operation leaves it at once); inside a batch, after the batch's commit."""
        snapshot = dict(job)
        job_id = job["id"]
        held = [(d, d.get(job_id, _ABSENT)) for d in (self._event_seq, self._log_seq, self._attempts)]
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


def _without_key(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != "event_id"}
