"""The trainer callbacks applied by the single writer: heartbeat, event, done, and batches.

Each checks the callback's attempt against the job's (a stale attempt's token is refused), is
applied once per idempotency key, and never moves a job backwards; what a `done` means for the
job is the recovery policy's decision (jobs/recovery.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from sdk import contract

from ray_app.jobs.callback_models import DoneIn, EventIn, HeartbeatIn
from ray_app.jobs.errors import Conflict, StaleAttempt
from ray_app.jobs.job import Job
from ray_app.jobs.states import JobState
from ray_app.jobs import recovery
from ray_app.jobs.recovery import Action
from ray_app.store import bulk, db
from ray_app.store.writer import Writer

if TYPE_CHECKING:
    from ray_app.store.core import JobStoreCore


class CallbackStore(Writer):
    # ------------------------------------------------------------------ trainer callbacks

    def check_attempt(self, job_id: str, token_attempt: int) -> dict[str, Any]:
        job = self._job(job_id)
        if token_attempt != job["attempt"]:
            raise StaleAttempt(
                f"callback token is for attempt {token_attempt}; the job is on attempt {job['attempt']}"
            )
        return job

    def _open_attempt(self, job_id: str, token_attempt: int, what: str) -> dict[str, Any]:
        """The job, if the token's attempt is its current one and it is not final yet."""
        job = self.check_attempt(job_id, token_attempt)
        if JobState(job["state"]).is_terminal:
            raise Conflict(f"job {job_id} is {job['state']}; {what} are no longer accepted")
        return job

    def heartbeat(self, job_id: str, token_attempt: int, body: dict[str, Any]) -> dict[str, Any]:
        hb = HeartbeatIn.model_validate(body)
        job = self._open_attempt(job_id, token_attempt, "heartbeats")
        key = bulk.callback_key("hb", token_attempt, hb.event_id, hb.seq)
        with self._tx(job) as conn:
            if key and not db.insert_key_once(conn, job_id, key):
                return {"should_continue": recovery.keeps_going(job), "duplicate": True}
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
        return {"should_continue": recovery.keeps_going(job), "duplicate": False}

    def event(self, job_id: str, token_attempt: int, body: dict[str, Any]) -> dict[str, Any]:
        ev = EventIn.model_validate(body)
        job = self._open_attempt(job_id, token_attempt, "events")
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
        return bulk.apply_callbacks(cast("JobStoreCore", self), items)  # the only subclass


def _without_key(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != "event_id"}
