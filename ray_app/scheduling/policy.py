"""One scheduling pass, decided from its facts alone (pure: no Ray, no database, no clock).

The controller (scheduling/queue.py) gathers the facts — the waiting jobs, the jobs holding
resources, what the cluster has free, the projects' quotas and recent use — and `plan()` answers:
which waiting jobs are offered to Ray now, in what order the rest wait and why, and which running
jobs are preempted for whom. The rules, in the order they apply:

1. **Priority**: higher first. A job that cannot start *reserves* what it waits for: no job
   after it in the queue may take those resources (so a lower-priority job never overtakes a
   higher one whose resources it would use; one that needs other resources still may).
2. **Fair share** within a priority: the project with the least *weighted dominant share* goes
   next, then its oldest job. The share is dominant-resource fairness (DRF, Ghodsi et al. 2011)
   over CPUs and GPUs: a project's share is its largest fraction of any resource the cluster
   has, counting what it holds now plus its decayed recent use (usage.py), divided by its weight.
   DRF because jobs ask for both kinds in very different mixes (a CPU-only preprocessing job and
   an 8-GPU run); counting the resource a project uses most of is what keeps it from dominating
   the one that is scarce. Holdings make a pass react at once (the next job of a project that
   just started one waits its turn); recent use carries fairness over time.
3. **Quotas**: a project never holds more GPUs, CPUs or running jobs than its quota. A job that
   would exceed it waits (it never fails for it) and reserves nothing: it could not use them.
4. **Preemption**: a job that cannot start may take resources from running jobs of *strictly*
   lower priority whose projects allow it: the lowest priority first, then the most recently
   started (least work lost), only as many as it needs, and only if they free enough. Resources
   that preempted jobs are still giving back are counted as on their way, so one pass does not
   preempt twice for the same need.

A job asking for what the policy does not count (a trainer's custom resources) or for more than
the whole cluster has is offered to Ray at once, within its quota: whether it can ever be
placed is Ray's answer (its placement timeout, or an autoscaler), as before there was a queue.
"""

from __future__ import annotations

import heapq
from collections import defaultdict, deque
from dataclasses import dataclass, field

from ray_app.scheduling.resources import EPS, NONE, Resources

RESOURCE_NAMES = (("gpus", "GPU"), ("cpus", "CPU"))


@dataclass(frozen=True)
class Quota:
    """A project's limits (None: unlimited), its fair-share weight, and whether its jobs may be
    preempted."""

    max_cpus: float | None = None
    max_gpus: float | None = None
    max_running_jobs: int | None = None
    weight: float = 1.0
    preemptible: bool = True


UNLIMITED = Quota()


@dataclass(frozen=True)
class Waiting:
    job_id: str
    project_id: str
    priority: int
    num: int  # submission order
    demand: Resources  # all its workers together
    beyond: bool = False  # asks for what the policy does not count: offered to Ray within its quota


@dataclass(frozen=True)
class Holding:
    """A job that has been offered to Ray (placed or not) and holds, or will hold, its demand."""

    job_id: str
    project_id: str
    priority: int
    demand: Resources
    started: float  # when it was offered (any clock; larger is newer)
    stopping: bool = False  # asked to stop (cancelled or preempted): its resources are on their way back
    placed: bool = True  # Ray has placed it: preempting it frees something


@dataclass(frozen=True)
class Facts:
    waiting: list[Waiting]
    holding: list[Holding]
    total: Resources  # the cluster's
    free: Resources  # free now for the platform's jobs
    quotas: dict[str, Quota] = field(default_factory=dict)
    recent: dict[str, Resources] = field(default_factory=dict)  # each project's recent rate (usage.py)
    preemption: bool = True
    # what jobs that ended gave back but Ray does not show free yet (its view lags a removal by a
    # moment): on its way, like what stopping jobs hold, so nobody is preempted for it
    returning: Resources = NONE


@dataclass(frozen=True)
class Entry:
    """A waiting job's place in this pass's queue (1 = next)."""

    job_id: str
    project_id: str
    priority: int
    position: int
    admitted: bool
    reason: str | None  # why it waits (None: offered to Ray now)
    preempting: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProjectState:
    held: Resources
    jobs: int
    share: float  # weighted dominant share at the start of the pass


@dataclass
class Plan:
    queue: list[Entry]
    preempt: list[tuple[str, str]]  # (victim job, the job it makes room for)
    projects: dict[str, ProjectState]

    @property
    def admitted(self) -> list[str]:
        return [e.job_id for e in self.queue if e.admitted]


def dominant_share(held: Resources, recent: Resources, total: Resources, weight: float) -> float:
    parts = [(getattr(held, k) + getattr(recent, k)) / getattr(total, k)
             for k, _ in RESOURCE_NAMES if getattr(total, k) > EPS]
    return max(parts, default=0.0) / max(weight, EPS)


def over_quota(project_id: str, quota: Quota, held: Resources, jobs: int, demand: Resources) -> str | None:
    """Why one more job of `demand` would break the project's quota (None: it would not)."""
    if quota.max_running_jobs is not None and jobs + 1 > quota.max_running_jobs:
        return f"project {project_id}: {jobs}/{quota.max_running_jobs} running jobs"
    for key, label in RESOURCE_NAMES:
        limit = getattr(quota, f"max_{key}")
        want, used = getattr(demand, key), getattr(held, key)
        if limit is None or want <= EPS or used + want <= limit + EPS:
            continue
        if want > limit + EPS:
            return f"project {project_id}: asks for {want:g} {label}s, more than its quota of {limit:g}"
        return f"project {project_id}: {used:g}/{limit:g} {label}s in use"
    return None


def plan(facts: Facts) -> Plan:
    held: dict[str, Resources] = defaultdict(lambda: NONE)
    jobs: dict[str, int] = defaultdict(int)
    for h in facts.holding:
        held[h.project_id] += h.demand
        jobs[h.project_id] += 1

    def quota(p: str) -> Quota:
        return facts.quotas.get(p, UNLIMITED)

    def share(p: str) -> float:
        return dominant_share(held[p], facts.recent.get(p, NONE), facts.total, quota(p).weight)

    projects = {p: ProjectState(held[p], jobs[p], share(p))
                for p in {*held, *(w.project_id for w in facts.waiting), *facts.recent}}
    pool = facts.free.at_least_zero()
    # what preempted (or cancelled) jobs still hold: free soon, for whoever needed it freed
    incoming = sum((h.demand for h in facts.holding if h.stopping and h.placed), facts.returning)
    victims = sorted((h for h in facts.holding if not h.stopping and h.placed and quota(h.project_id).preemptible),
                     key=lambda h: (h.priority, -h.started))
    queue: list[Entry] = []
    preempt: list[tuple[str, str]] = []

    by_priority: dict[int, dict[str, deque[Waiting]]] = defaultdict(lambda: defaultdict(deque))
    for w in sorted(facts.waiting, key=lambda w: w.num):
        by_priority[w.priority][w.project_id].append(w)
    for priority in sorted(by_priority, reverse=True):
        queues = by_priority[priority]
        heap = [(share(p), q[0].num, p) for p, q in queues.items()]
        heapq.heapify(heap)
        while heap:
            _, _, p = heapq.heappop(heap)
            job = queues[p].popleft()
            position = len(queue) + 1
            reason = over_quota(p, quota(p), held[p], jobs[p], job.demand)
            chosen: list[Holding] = []
            if reason is None and (job.beyond or job.demand.fits(pool)):
                if not job.beyond:
                    pool = pool - job.demand
                held[p] += job.demand
                jobs[p] += 1
            elif reason is None:
                need = (job.demand - pool).at_least_zero()
                if not need.fits(incoming) and facts.preemption:
                    chosen = _victims(victims, job, need - incoming.minimum(need))
                    for v in chosen:
                        victims.remove(v)
                        incoming += v.demand
                        preempt.append((v.job_id, job.job_id))
                if need.fits(incoming):  # what it needs is on its way: claimed, so no one else takes it
                    incoming = (incoming - need).at_least_zero()
                    names = ", ".join(v.job_id for v in chosen)
                    reason = (f"preempting {names} (lower priority) for {job.demand.describe()}" if chosen
                              else f"waiting for {job.demand.describe()} that stopping jobs give back")
                else:
                    reason = f"waiting for {job.demand.describe()} to be free"
                pool = (pool - job.demand).at_least_zero()  # reserved: later jobs do not take it
            queue.append(Entry(job.job_id, p, priority, position, reason is None, reason,
                               tuple(v.job_id for v in chosen)))
            if queues[p]:
                heapq.heappush(heap, (share(p), queues[p][0].num, p))
    return Plan(queue, preempt, projects)


def _victims(candidates: list[Holding], job: Waiting, need: Resources) -> list[Holding]:
    """The running jobs `job` may preempt to free `need`: strictly lower priority, cheapest loss
    first (`candidates` is in that order), only those that free something it needs; none at all
    unless together they free enough."""
    chosen: list[Holding] = []
    freed = NONE
    for v in candidates:
        if v.priority >= job.priority:
            break  # sorted by priority: no lower one follows
        if not v.demand.shares(need - freed.minimum(need)):
            continue
        chosen.append(v)
        freed += v.demand
        if need.fits(freed):
            return chosen
    return []
