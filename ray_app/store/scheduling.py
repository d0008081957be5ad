"""The shared cluster's records (issue 30): projects' quotas and decayed usage, jobs held in the
queue with their reasons, preemption requests and preempted attempts.

Reads are functions on a connection (the controller and the API run them on their own engines);
writes are the store's operations (`SchedulingWriter`, a layer of JobStoreCore), so a job held in
the queue, a cancel and a heartbeat never interleave. What to decide is ray_app/scheduling's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from ray_app.jobs.errors import Conflict
from ray_app.jobs.states import JobState
from ray_app.store import attempts, db
from ray_app.store.teams import get_project
from ray_app.store.writer import Writer

Row = dict[str, Any]

QUOTA_FIELDS = ("max_gpus", "max_cpus", "max_running_jobs", "weight", "preemptible")


# ---------------------------------------------------------------- reads on a connection


def quotas(conn: Connection) -> dict[str, Row]:
    """Every project's quota fields, by id."""
    cols = [db.projects.c.id, *(db.projects.c[name] for name in QUOTA_FIELDS)]
    return {r["id"]: r for r in db.rows(conn.execute(select(*cols)))}


WAITING_COLUMNS = ("id", "num", "state", "attempt", "project_id", "priority", "framework", "model_name",
                   "workers", "num_cpus", "num_gpus", "memory_mb", "cancel_requested", "wait_reason", "retry_at",
                   "created_at", "created_by", "sweep_id", "preemptions")


def waiting_jobs(conn: Connection, changed_since: datetime | None = None) -> list[Row]:
    """The jobs not running (PENDING, QUEUED) with only what the queue looks at; with
    `changed_since`, instead every job changed since then, whatever its state (the queue keeps its
    rows up to date from these: one read of the few that changed, not of ten thousand)."""
    cols = [db.jobs.c[name] for name in WAITING_COLUMNS]
    if changed_since is None:
        stmt = select(*cols).where(db.jobs.c.state.in_([JobState.PENDING.value, JobState.QUEUED.value]))
    else:
        stmt = select(*cols).where(db.jobs.c.updated_at >= changed_since)
    return db.rows(conn.execute(stmt))


def usage(conn: Connection) -> dict[str, Row]:
    """Every project's stored decayed usage (cpu_seconds, gpu_seconds, updated_at), by id."""
    return {r["project_id"]: r for r in db.rows(conn.execute(select(db.project_usage)))}


# ---------------------------------------------------------------- the writer's operations


class SchedulingWriter(Writer):
    def set_quota(self, project_id: str, changes: dict[str, Any]) -> Row:
        """Change some of a project's quota fields (None: unlimited); the others stay."""
        unknown = set(changes) - set(QUOTA_FIELDS)
        if unknown:
            raise ValueError(f"not quota fields: {sorted(unknown)}")
        with self.engine.begin() as conn:
            get_project(conn, project_id)
            if changes:
                conn.execute(update(db.projects).where(db.projects.c.id == project_id).values(**changes))
            return get_project(conn, project_id)

    def save_usage(self, rows: dict[str, tuple[float, float]], at: datetime) -> None:
        """Each project's decayed usage (cpu_seconds, gpu_seconds) as of `at`: the controller's
        running account, so a restarted controller goes on from it."""
        if not rows:
            return
        with self.engine.begin() as conn:
            known = set(conn.execute(select(db.project_usage.c.project_id)).scalars())
            for project_id, (cpu_s, gpu_s) in rows.items():
                values = {"cpu_seconds": cpu_s, "gpu_seconds": gpu_s, "updated_at": at}
                if project_id in known:
                    conn.execute(update(db.project_usage).where(db.project_usage.c.project_id == project_id)
                                 .values(**values))
                else:
                    conn.execute(db.project_usage.insert().values(project_id=project_id, **values))

    def queue_waits(self, items: list[tuple[str, int, str]]) -> int:
        """Jobs the controller holds in its queue, each with why it waits `(job_id, attempt,
        reason)`, in one transaction: a PENDING job becomes QUEUED (it is in the queue now), a
        changed reason is set and is an event. A job that moved on meanwhile (another attempt,
        running, final, cancelled) is skipped. Returns how many changed."""
        jobs = []
        for job_id, attempt, reason in items:
            job = self._jobs.get(job_id)
            if (job is None or job["attempt"] != attempt or job["cancel_requested"]
                    or job["state"] not in (JobState.PENDING.value, JobState.QUEUED.value)
                    or (job["state"] == JobState.QUEUED.value and job.get("wait_reason") == reason)):
                continue
            jobs.append((job, reason))
        with self._many([job for job, _ in jobs]) as conn:
            for job, reason in jobs:
                if job["state"] == JobState.PENDING.value:
                    self._transition(conn, job, JobState.QUEUED, "in the queue", wait_reason=reason)
                else:
                    self._set(conn, job, wait_reason=reason)
                self._add_event(conn, job, "platform", "info", "waiting", reason, {"reason": reason})
        return len(jobs)

    def request_preempt(self, job_id: str, attempt: int, for_job: str, reason: str) -> Row:
        """Ask the running `attempt` to stop for `for_job`, a job of higher priority: its next
        heartbeat answers should_continue=false, its trainer saves a checkpoint and exits, and the
        controller requeues it (`requeue_preempted`). Idempotent."""
        job = self._job(job_id)
        if job["attempt"] != attempt or JobState(job["state"]).is_terminal:
            raise Conflict(f"job {job_id} is on attempt {job['attempt']} ({job['state']}), not running {attempt}")
        if job.get("preempt_requested_at") is not None or job["cancel_requested"]:
            return dict(job)
        with self._tx(job) as conn:
            self._set(conn, job, preempt_requested_at=db.utcnow())
            self._add_event(conn, job, "platform", "warning", "preempt_requested", reason,
                            {"for_job": for_job, "attempt": attempt})
        return dict(job)

    def requeue_preempted(self, job_id: str, attempt: int, reason: str,
                          ended: dict[str, Any] | None = None) -> Row:
        """The preempted `attempt` is gone: the job waits in the queue again and its next attempt
        resumes from its last checkpoint. Not a failure: it does not use up `max_attempts`."""
        job = self._job(job_id)
        if job["attempt"] != attempt:
            raise Conflict(f"job {job_id} is on attempt {job['attempt']}, not {attempt}")
        resume = job["last_checkpoint"] or job["resume_from"]
        with self._tx(job) as conn:
            self._attempts[job_id] = attempts.close(conn, self._history(job_id, conn), job, "preempted",
                                                    reason, None, ended)
            self._transition(
                conn, job, JobState.QUEUED, f"preempted: {reason}", attempt=attempt + 1,
                preemptions=job["preemptions"] + 1, preempt_requested_at=None, resume_from=resume,
                done=None, last_heartbeat_at=None, last_progress_at=None, started_at=None, retry_at=None,
                wait_reason="preempted; waiting in the queue to resume", epoch=None, step=None, progress=0.0,
            )
            self._add_event(conn, job, "platform", "warning", "preempted",
                            f"attempt {attempt} preempted ({reason}); attempt {attempt + 1} resumes "
                            + (f"from {resume}" if resume else "from the start") + " when it is scheduled",
                            {"attempt": attempt, "reason": reason, "resume_from": resume})
        return dict(job)

    @contextmanager
    def _many(self, jobs: list[Row]) -> Iterator[Any]:
        """One transaction for changes to several jobs; its failure undoes them in memory too."""
        snapshots = [(job, dict(job), self._event_seq.get(job["id"])) for job in jobs]
        try:
            with self.engine.begin() as conn:
                yield conn
        except BaseException:
            for job, snapshot, seq in snapshots:
                job.clear()
                job.update(snapshot)
                if seq is None:
                    self._event_seq.pop(snapshot["id"], None)
                else:
                    self._event_seq[snapshot["id"]] = seq
            raise
