"""JobStoreCore: every change to a job goes through here, written through to the database.

The JobStore actor (store/actor.py) wraps one instance; being the only writer is what makes the
compare-and-set transitions and the idempotency checks race-free. This class has no Ray in it,
so it is tested directly as well as through the actor. Its layers: the writer's memory and
transactions (store/writer.py), the trainer callbacks (store/callbacks.py), and here the jobs'
own operations: create, cancel, the controller's transitions and attempt records, logs.

The API reads jobs, lists and histories without this class (store/reads.py); its own read
methods use the same functions, so both return the same dictionaries.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from sdk.contract import ErrorType

from ray_app.jobs import recovery
from ray_app.jobs.errors import Conflict
from ray_app.jobs.states import JobState
from ray_app.jobs.types import readable
from ray_app.store import attempts, db, reads
from ray_app.store.audit import AuditWriter
from ray_app.store.callbacks import CallbackStore
from ray_app.store.datasets import DatasetWriter
from ray_app.store.exports import ExportWriter
from ray_app.store.scheduling import SchedulingWriter
from ray_app.store.sweeps import SweepWriter
from ray_app.store.teams import TeamWriter

log = logging.getLogger("ray_app.store")

JOB_DEFAULTS: dict[str, Any] = {
    "progress": 0.0,
    "latest_metrics": {},
    "final_metrics": {},
    "artifacts": {},
    "cancel_requested": False,
}


class JobStoreCore(CallbackStore, DatasetWriter, ExportWriter, TeamWriter, AuditWriter, SweepWriter,
                   SchedulingWriter):
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
            self.check_job_dataset(conn, job)
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
        id_prefix: str | None = None,
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Newest first; `cursor` is the `num` of the last job of the previous page. In SQL
        (reads.list_jobs): memory holds the live jobs only."""
        with self.engine.connect() as conn:
            return reads.list_jobs(conn, state, project_id, framework, cursor, limit, id_prefix)

    def active_jobs(self) -> list[dict[str, Any]]:
        return [dict(j) for j in self._jobs.values() if not JobState(j["state"]).is_terminal]

    def jobs_to_follow(self, ids: list[str]) -> list[dict[str, Any]]:
        """The live jobs the controller follows: those it names (it launched them) and every
        RUNNING one. The jobs waiting in the queue it reads itself, lightly, by SQL
        (store/scheduling.waiting_jobs): ten thousand of them must not pass through here."""
        wanted = set(ids)
        return [dict(j) for j in self._jobs.values()
                if j["state"] == JobState.RUNNING.value
                or (j["id"] in wanted and not JobState(j["state"]).is_terminal)]

    def request_cancel(self, job_id: str, by: str | None = None) -> dict[str, Any]:
        """Idempotent. A job that has not started is cancelled at once; a running one is asked
        to stop (the next heartbeat answers should_continue=false) and the controller marks it
        CANCELLED once its process tree is gone. `by`: the user who asked (the first one)."""
        job = self._job(job_id)
        state = JobState(job["state"])
        if state.is_terminal or job["cancel_requested"]:
            return dict(job)
        with self._tx(job) as conn:
            self._set(conn, job, cancel_requested=True, cancel_requested_at=db.utcnow(), cancelled_by=by)
            self._add_event(conn, job, "platform", "info", "cancel_requested",
                            f"cancel requested by {by}" if by else "cancel requested", {"by": by} if by else {})
            if state == JobState.PENDING:
                self._transition(conn, job, JobState.CANCELLED, "cancelled before it was queued")
        return self._with_history(job)

    # ------------------------------------------------------------------ a sweep's trials (store/sweeps.py)

    def create_trial(self, sweep_id: str, job_id: str, spec: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        """A sweep's trial: a job with its sweep, number and values. Safe to repeat with the
        same id (the trial's job is chosen by its Tune trial, sweeps/trial.py): a trial that
        Tune starts again after a restart finds its job instead of training again."""
        existing = self._jobs.get(job_id) or self._load(job_id)
        if existing is not None:
            return dict(existing)
        with self.engine.connect() as conn:
            trial = self.trial_spec(conn, sweep_id, spec, params)
        return self.create_job(trial, job_id)

    def stop_trial_early(self, job_id: str, reason: str) -> dict[str, Any]:
        """The sweep's scheduler stopped this trial: asked to stop like a cancel, recorded as
        stopped early (not cancelled by anyone, not failed)."""
        job = self._job(job_id)
        if JobState(job["state"]).is_terminal or job["cancel_requested"]:
            return dict(job)
        with self._tx(job) as conn:
            self._set(conn, job, stopped_early=True)
            self._add_event(conn, job, "platform", "info", "stopped_early", reason, {})
        return self.request_cancel(job_id, by=None)

    def model_published(self, job_id: str, model: dict[str, Any]) -> dict[str, Any]:
        """The job's model as ray_app/serving/mlflow_models.py logged it (or why it could not),
        with an event saying so."""
        job = self._job(job_id)
        if model.get("error"):
            kind, level, message = "model_not_logged", "warning", f"model not logged to MLflow: {model['error']}"
        elif model.get("registered_version") is not None:
            kind, level = "model_registered", "info"
            message = f"model registered as {model['registered_name']} version {model['registered_version']}"
        else:
            kind, level, message = "model_logged", "info", f"model logged to MLflow: {model.get('uri')}"
        with self._tx(job) as conn:
            self._set(conn, job, mlflow_model=model)
            self._add_event(conn, job, "platform", level, kind, message, model)
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
                ended: dict[str, Any] | None = None, delay_s: float = 0.0) -> dict[str, Any]:
        """Start the next attempt after `attempt` failed, resuming from the last checkpoint, once
        `delay_s` have passed (the retry backoff: `retry_at`, and the job's wait reason says so).
        Compare-and-set: refused unless the job is still on `attempt` and has one left (whether
        to retry, and when, is the recovery policy's call, jobs/recovery.py)."""
        job = self._job(job_id)
        if job["attempt"] != attempt:
            raise Conflict(f"job {job_id} is on attempt {job['attempt']}, not {attempt}")
        if recovery.attempts_used(job["attempt"], job["preemptions"]) >= job["max_attempts"]:
            raise Conflict(f"job {job_id} has no attempts left ({attempt} of {job['max_attempts']})")
        now = db.utcnow()
        retry_at = now + timedelta(seconds=delay_s) if delay_s > 0 else None
        wait = (f"retry backoff: attempt {attempt + 1} of {job['max_attempts']} starts at "
                f"{retry_at:%H:%M:%S} UTC, {delay_s:g}s after attempt {attempt} failed ({error_type})"
                if retry_at else None)
        with self._tx(job) as conn:
            self._attempts[job_id] = attempts.close(conn, self._history(job_id, conn), job, "retried",
                                                    reason, error_type, ended)
            self._transition(
                conn, job, JobState.QUEUED, f"retrying after attempt {attempt} failed: {reason}",
                attempt=attempt + 1, resume_from=job["last_checkpoint"] or job["resume_from"],
                done=None, error=reason, error_type=error_type, last_heartbeat_at=None,
                last_progress_at=None, started_at=None, retry_at=retry_at, wait_reason=wait,
                # the new attempt reports its own progress from where it resumes
                epoch=None, step=None, progress=0.0,
            )
            self._add_event(
                conn, job, "platform", "warning", "retry",
                f"attempt {attempt + 1} of {job['max_attempts']} starts"
                + (f" in {delay_s:g}s (retry backoff)" if retry_at else "")
                + (f", resuming from {job['resume_from']}" if job["resume_from"] else ""),
                {"previous_attempt": attempt, "reason": reason, "resume_from": job["resume_from"],
                 "delay_s": delay_s, "retry_at": retry_at.isoformat() if retry_at else None},
            )
        return self._with_history(job)

    def set_wait_reason(self, job_id: str, attempt: int, reason: str | None) -> dict[str, Any]:
        """Why the job's `attempt`, not started yet, waits (None: it waits no more; its retry
        backoff is over). A new reason is an event too. Refused once the job has moved on."""
        job = self._job(job_id)
        if job["attempt"] != attempt or JobState(job["state"]).is_terminal:
            raise Conflict(f"job {job_id} is on attempt {job['attempt']} ({job['state']}), not waiting on {attempt}")
        if job.get("wait_reason") == reason and (reason is not None or job.get("retry_at") is None):
            return self._with_history(job)
        with self._tx(job) as conn:
            self._set(conn, job, wait_reason=reason, retry_at=None if reason is None else job.get("retry_at"))
            if reason is not None:
                self._add_event(conn, job, "platform", "info", "waiting", reason, {"reason": reason})
        return self._with_history(job)

    def attempt_started(self, job_id: str, attempt: int, node_id: str | None, pid: int, pgid: int,
                        details: dict[str, Any] | None = None, rank: int = 0) -> None:
        """A runner started one of the attempt's trainer processes: where it runs, on the
        attempt's row (so the controller can end it even if the runner dies), and the user's
        event with `details` (GPUs, start-up timings), in one transaction: `trainer_process` for
        rank 0 (the process that reports for the job), `rank_process` for the other ranks."""
        job = self._job(job_id)
        with self._tx(job) as conn:
            self._attempts[job_id] = attempts.started(conn, self._history(job_id, conn), job_id, attempt,
                                                      node_id, pid, pgid, rank)
            data = {**(details or {}), "pid": pid, "attempt": attempt, "node_id": node_id, "rank": rank}
            if rank == 0:
                self._add_event(conn, job, "platform", "info", "trainer_process", f"trainer process {pid} started",
                                data)
            else:
                self._add_event(conn, job, "platform", "info", "rank_process",
                                f"rank {rank}: trainer process {pid} started", data)

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

    def append_logs(self, job_id: str, attempt: int, lines: list[tuple[str, str]], final: bool = False,
                    rank: int = 0) -> int:
        """Store output lines; `final`: the attempt's last ones (its process has exited), recorded
        on its attempt row in the same transaction, so a reader knows it has everything."""
        job = self._job(job_id)
        if final:
            with self._tx(job) as conn:
                seq = self._write_logs(conn, job_id, attempt, lines, rank)
                self._attempts[job_id] = attempts.output_complete(conn, self._history(job_id, conn),
                                                                  job_id, attempt)
        elif lines:
            with self.engine.begin() as conn:
                seq = self._write_logs(conn, job_id, attempt, lines, rank)
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

    def _write_logs(self, conn, job_id: str, attempt: int, lines: list[tuple[str, str]], rank: int = 0) -> int:
        """Insert the lines after the job's last one; returns the new last seq."""
        seq = self._last_log_seq(conn, job_id)
        if not lines:
            return seq
        now = db.utcnow()
        values = []
        for stream, line in lines:
            seq += 1
            values.append({"job_id": job_id, "seq": seq, "attempt": attempt, "stream": stream, "rank": rank,
                           # a trainer may print anything: a NUL would fail the write on PostgreSQL
                           "line": readable(line[:16384]), "created_at": now})
        conn.execute(db.logs.insert(), values)
        return seq

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
