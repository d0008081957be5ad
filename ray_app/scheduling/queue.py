"""The controller's queue: each pass gathers the facts, lets the policy decide (policy.py), and
carries out the decision through the store — jobs held with their reasons, preemptions asked for
— and keeps it for `GET /v1/queue`.

It keeps nothing the database cannot give back: the jobs waiting are the store's, quotas are the
projects', and each project's decayed usage is written every few seconds (`project_usage`), so a
restarted controller finds the same queue and goes on with the same usage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import ray

from ray_app.config import Settings
from ray_app.jobs.job import Job
from ray_app.jobs.states import JobState
from ray_app.runtime import launch
from ray_app.runtime.registry import TrainerRegistry, UnknownTrainer
from ray_app.scheduling import policy, usage
from ray_app.scheduling.priority import name_of
from ray_app.scheduling.resources import NONE, Resources
from ray_app.store import scheduling as records
from ray_app.store.client import StoreClient
from ray_app.store.reads import JobReader

log = logging.getLogger("ray_app.controller")

USAGE_SAVE_S = 5.0  # how often each project's usage is written (what a restart can lose at most)
WAITS_PER_CALL = 500  # reasons written per store call: the single writer is never held for long
COUNTED = frozenset({"CPU", "GPU", "memory"})  # what a job may ask for and still be counted here
REDECIDE_S = 5.0  # a pass decides again at least this often when nothing changed (shares drift)
READ_OVERLAP_S = 5.0  # changed rows are read from this long before the last read (commits land late)
RETURNING_S = 3.0  # how long what an ended job held counts as on its way back (Ray's view lags)


@dataclass(frozen=True)
class Queued:
    """A job not offered to Ray yet, as the queue reads it: only what it looks at, by SQL on the
    controller's own engine (store/scheduling.waiting_jobs), never as a whole `Job`."""

    id: str
    num: int
    state: JobState
    attempt: int
    project_id: str
    priority: int
    framework: str
    model_name: str
    workers: int
    num_cpus: float | None
    num_gpus: float
    memory_mb: int | None
    cancel_requested: bool
    wait_reason: str | None
    retry_at: datetime | None
    created_at: datetime
    created_by: str | None
    sweep_id: str | None
    preemptions: int

    @classmethod
    def of(cls, row: dict[str, Any]) -> Queued:
        return cls(**{**row, "state": JobState(row["state"])})


class Asks(Protocol):
    """What a job asks for: a `Job` and a `Queued` both say it."""

    @property
    def framework(self) -> str: ...
    @property
    def workers(self) -> int: ...
    @property
    def num_cpus(self) -> float | None: ...
    @property
    def num_gpus(self) -> float: ...
    @property
    def memory_mb(self) -> int | None: ...


@dataclass(frozen=True)
class Held:
    """A job that has been offered to Ray, as the controller follows it."""

    job: Job
    started: float  # monotonic, when offered
    placed: bool


class JobQueue:
    def __init__(self, settings: Settings, store: StoreClient, registry: TrainerRegistry):
        self.settings = settings
        self.store = store
        self.registry = registry
        self.usage: dict[str, Resources] = {}  # decayed resource-seconds, per project
        self._usage_at: float | None = None  # monotonic time `usage` is as of
        self._saved_at = 0.0
        self._loaded = False
        self._snapshot: dict[str, Any] = {"jobs": [], "projects": [], "decided_at": None}
        self._decision: tuple[Any, ...] | None = None  # what the snapshot is built from, once asked
        self._demands: dict[tuple[Any, ...], tuple[Resources, bool]] = {}  # by the fields a demand comes from
        # per pass, in ms (bench/queue_scale.py): the policy's decision alone, and the whole pass
        # (facts gathered, decided, reasons and preemptions written)
        self.decide_ms: deque[float] = deque(maxlen=5000)
        self.pass_ms: deque[float] = deque(maxlen=5000)
        self._held: dict[str, Resources] = {}  # last pass's held jobs (placed): what they hold
        self._rows: dict[str, Queued] = {}  # the jobs PENDING or QUEUED, kept up to date by `waiting`
        self._read_at: datetime | None = None
        self._changed = True  # whether a waiting job changed since the last decision
        self._facts_seen: Any = None  # what the last decision was made from, besides the rows
        self._decided_at = 0.0
        self._returning: list[tuple[float, Resources]] = []  # (until, what) an ended job gave back
        # the controller's own reader of the database (waiting jobs, quotas, usage): never the single writer
        self.reader = JobReader(settings.resolved_database_url)

    async def waiting(self, followed: set[str]) -> list[Queued]:
        """The jobs PENDING or QUEUED that the controller does not follow (not offered yet): read
        whole once, then only the jobs changed since the last read."""
        now = datetime.now(UTC)
        since = None if self._read_at is None else self._read_at - timedelta(seconds=READ_OVERLAP_S)
        rows = await asyncio.to_thread(self.reader.run, records.waiting_jobs, since)
        if since is None:
            self._rows = {r["id"]: Queued.of(r) for r in rows}
            self._changed = True
        for r in rows if since is not None else ():
            if r["state"] in (JobState.PENDING.value, JobState.QUEUED.value):
                row = Queued.of(r)
                if self._rows.get(row.id) != row:
                    self._rows[row.id] = row
                    self._changed = True
            elif self._rows.pop(r["id"], None) is not None:
                self._changed = True
        self._read_at = now
        return [q for job_id, q in self._rows.items() if job_id not in followed]

    async def schedule(self, candidates: list[Queued], held: list[Held]) -> list[str]:
        """One pass over the jobs not offered to Ray yet: returns those to offer now, in order."""
        started = time.perf_counter()
        if not self._loaded:
            await self._load_usage()
        quota_rows = await asyncio.to_thread(self.reader.run, records.quotas)
        quotas = {p: _quota(row) for p, row in quota_rows.items()}
        self._accrue(held)
        total, available = await asyncio.to_thread(_cluster)
        offered = sum((self._demand(h.job)[0] for h in held), NONE)
        unplaced = sum((self._demand(h.job)[0] for h in held if not h.placed), NONE)
        # free for the platform's jobs: what Ray has free less what offered jobs will take, and
        # never more than the cluster less everything offered (Ray's view lags a placement a moment)
        free = (available - unplaced).minimum(total - offered).at_least_zero()
        returning = self._returned(held)
        now = datetime.now(UTC)
        # nothing changed since the last decision (no waiting job, no held one, the same room,
        # the same quotas), and it is recent: it stands (ten thousand waiting must not cost a
        # decision every tick)
        seen = (sorted((h.job.id, h.placed, h.job.cancel_requested, h.job.preempt_requested_at is None)
                       for h in held), total, free, returning, sorted(quota_rows.items(), key=lambda kv: kv[0]),
                any(j.retry_at is not None and j.retry_at <= now for j in candidates))
        if not self._changed and seen == self._facts_seen and time.monotonic() - self._decided_at < REDECIDE_S:
            return []
        self._changed, self._facts_seen, self._decided_at = False, seen, time.monotonic()

        waiting: list[policy.Waiting] = []
        by_id: dict[str, Queued] = {}
        for job in candidates:
            if job.cancel_requested:
                await self.store.transition(job.id, JobState.CANCELLED, "cancelled while queued", attempt=job.attempt)
                continue
            if job.retry_at is not None and job.retry_at > now:
                continue  # in its retry backoff: it says so (jobs/recovery.py)
            demand, beyond = self._demand(job)
            by_id[job.id] = job
            waiting.append(policy.Waiting(job.id, job.project_id, job.priority, job.num, demand,
                                          beyond or not demand.fits(total)))
        holding = [policy.Holding(h.job.id, h.job.project_id, h.job.priority, self._demand(h.job)[0],
                                  h.started, h.job.cancel_requested or h.job.preempt_requested_at is not None,
                                  h.placed) for h in held]
        half_life = self.settings.fair_share_half_life_s
        facts = policy.Facts(waiting, holding, total, free, quotas,
                             {p: usage.recent_rate(u, half_life) for p, u in self.usage.items()},
                             self.settings.preemption, returning)
        decided = time.perf_counter()
        plan = policy.plan(facts)
        self.decide_ms.append((time.perf_counter() - decided) * 1000)

        waits = [(e.job_id, by_id[e.job_id].attempt, e.reason) for e in plan.queue
                 if e.reason is not None and (by_id[e.job_id].wait_reason != e.reason
                                              or by_id[e.job_id].state is JobState.PENDING)]
        for i in range(0, len(waits), WAITS_PER_CALL):
            await self.store.queue_waits(waits[i:i + WAITS_PER_CALL])
        jobs_held = {h.job.id: h.job for h in held}
        for victim_id, for_id in plan.preempt:
            victim, for_job = jobs_held[victim_id], by_id[for_id]
            log.info("preempting job %s (priority %d) for job %s (priority %d)", victim_id, victim.priority,
                     for_id, for_job.priority)
            await self.store.request_preempt(victim_id, victim.attempt, for_id,
                                             f"preempted for job {for_id} (priority {name_of(for_job.priority)}, "
                                             f"project {for_job.project_id}): it needs these resources")
        self.pass_ms.append((time.perf_counter() - started) * 1000)
        # the queue as GET /v1/queue shows it is built when asked for, not at every decision
        self._decision = (plan, facts, by_id, [j for j in candidates if j.id not in by_id], dict(self.usage),
                          quotas, datetime.now(UTC), round(self.pass_ms[-1], 3))
        return plan.admitted

    @property
    def snapshot(self) -> dict[str, Any]:
        """The last decision as GET /v1/queue shows it (built once per decision, when asked)."""
        decision = self._decision
        if decision is not None:
            plan, facts, by_id, backoff, used, quotas, decided_at, pass_ms = decision
            self._snapshot = {**_snapshot(plan, facts, by_id, backoff, used, quotas, self.settings),
                              "decided_at": decided_at.isoformat(), "pass_ms": pass_ms}
            if self._decision is decision:
                self._decision = None
        return self._snapshot

    def _demand(self, job: Asks) -> tuple[Resources, bool]:
        key = (job.framework, job.workers, job.num_cpus, job.num_gpus, job.memory_mb)
        found = self._demands.get(key)
        if found is None:
            if len(self._demands) > 10_000:
                self._demands.clear()
            found = _demand_of(job, self.registry)
            if found != (NONE, True):  # an unknown trainer may be registered by its launch's rescan
                self._demands[key] = found
        return found

    def _returned(self, held: list[Held]) -> Resources:
        """What jobs held at the last pass and gone now gave back, for RETURNING_S: Ray shows it
        free a moment later, and until then it must not look as if only preemption could free it."""
        now = time.monotonic()
        current = {h.job.id: self._demand(h.job)[0] for h in held if h.placed}
        self._returning = [(until, r) for until, r in self._returning if until > now]
        self._returning += [(now + RETURNING_S, r) for job_id, r in self._held.items() if job_id not in current]
        self._held = current
        return sum((r for _, r in self._returning), NONE)

    # ------------------------------------------------------------------ usage

    async def _load_usage(self) -> None:
        rows = await asyncio.to_thread(self.reader.run, records.usage)
        now = datetime.now(UTC)
        for project_id, row in rows.items():  # decayed over the time no controller counted
            idle = max(0.0, (now - row["updated_at"]).total_seconds())
            self.usage[project_id] = usage.accrue(Resources(row["cpu_seconds"], row["gpu_seconds"]), NONE,
                                                  idle, self.settings.fair_share_half_life_s)
        self._loaded = True
        self._usage_at = time.monotonic()

    def _accrue(self, held: Iterable[Held]) -> None:
        now = time.monotonic()
        dt = now - (self._usage_at or now)
        self._usage_at = now
        holding: dict[str, Resources] = {}
        for h in held:
            if h.placed:
                holding[h.job.project_id] = holding.get(h.job.project_id, NONE) + self._demand(h.job)[0]
        for p in {*self.usage, *holding}:
            self.usage[p] = usage.accrue(self.usage.get(p, NONE), holding.get(p, NONE), dt,
                                         self.settings.fair_share_half_life_s)
        if now - self._saved_at >= USAGE_SAVE_S and self.usage:
            self._saved_at = now
            rows = {p: (u.cpus, u.gpus) for p, u in self.usage.items()}
            task = asyncio.get_running_loop().create_task(self.store.save_usage(rows, datetime.now(UTC)))
            task.add_done_callback(_log_failure)


def _demand_of(job: Asks, registry: TrainerRegistry) -> tuple[Resources, bool]:
    """What the job's workers take together, and whether it asks for something not counted here."""
    try:
        bundle = launch.bundle_of(job.num_cpus, job.num_gpus, job.memory_mb, registry.get(job.framework))
    except UnknownTrainer:  # its launch fails it with the reason; nothing to count
        return NONE, True
    workers = job.workers or 1
    return (Resources(bundle.get("CPU", 0.0) * workers, bundle.get("GPU", 0.0) * workers),
            any(k not in COUNTED for k in bundle))


def _cluster() -> tuple[Resources, Resources]:
    total, available = ray.cluster_resources(), ray.available_resources()
    return (Resources(total.get("CPU", 0.0), total.get("GPU", 0.0)),
            Resources(available.get("CPU", 0.0), available.get("GPU", 0.0)))


def _quota(row: dict[str, Any]) -> policy.Quota:
    return policy.Quota(row["max_cpus"], row["max_gpus"], row["max_running_jobs"], row["weight"] or 1.0,
                        bool(row["preemptible"]))


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("could not save the projects' usage: %s", task.exception())


def _snapshot(plan: policy.Plan, facts: policy.Facts, by_id: dict[str, Queued], backoff: list[Queued],
              used: dict[str, Resources], quotas: dict[str, policy.Quota], settings: Settings) -> dict[str, Any]:
    """The last decision as `GET /v1/queue` shows it (scheduling/models.py)."""
    jobs = []
    for e in plan.queue:
        job = by_id[e.job_id]
        jobs.append(_job_entry(job, e.position, e.reason or "offered to the cluster"))
    for job in backoff:
        jobs.append(_job_entry(job, None, job.wait_reason or "retry backoff"))
    waiting_by_project: dict[str, int] = {}
    for e in plan.queue:
        if not e.admitted:
            waiting_by_project[e.project_id] = waiting_by_project.get(e.project_id, 0) + 1
    half_life = settings.fair_share_half_life_s
    projects = []
    for p in sorted({*plan.projects, *quotas}):
        state = plan.projects.get(p)
        q = quotas.get(p, policy.UNLIMITED)
        u = used.get(p, NONE)
        rate = usage.recent_rate(u, half_life)
        projects.append({
            "project_id": p,
            "quota": {"max_gpus": q.max_gpus, "max_cpus": q.max_cpus, "max_running_jobs": q.max_running_jobs},
            "weight": q.weight, "preemptible": q.preemptible,
            "in_use": {"gpus": state.held.gpus if state else 0.0, "cpus": state.held.cpus if state else 0.0,
                       "running_jobs": state.jobs if state else 0},
            "share": round(state.share, 6) if state else 0.0,
            "recent": {"gpus": round(rate.gpus, 6), "cpus": round(rate.cpus, 6)},
            "usage": {"gpu_seconds": round(u.gpus, 3), "cpu_seconds": round(u.cpus, 3)},
            "waiting": waiting_by_project.get(p, 0),
        })
    return {
        "jobs": jobs, "projects": projects,
        "capacity": {"total": {"cpus": facts.total.cpus, "gpus": facts.total.gpus},
                     "free": {"cpus": facts.free.cpus, "gpus": facts.free.gpus}},
        "preemption": facts.preemption, "fair_share_half_life_s": half_life,
    }


def _job_entry(job: Queued, position: int | None, reason: str) -> dict[str, Any]:
    return {"position": position, "job_id": job.id, "project_id": job.project_id, "priority": job.priority,
            "priority_name": name_of(job.priority), "state": job.state.value, "waiting_for": reason,
            "framework": job.framework, "model_name": job.model_name, "workers": job.workers,
            "num_cpus": job.num_cpus, "num_gpus": job.num_gpus, "created_by": job.created_by,
            "created_at": job.created_at.isoformat(), "sweep_id": job.sweep_id, "preemptions": job.preemptions}
