"""The controller's reconcile logic (DESIGN §5, §6): one tick makes what Ray runs match what the
store says, for every active job.

It keeps nothing that the store and Ray cannot give back, so a restarted controller (or a
restarted platform) re-attaches to runner actors that are still alive, by name, and retries or
fails the attempts whose runner is gone. What to do when an attempt ends is the recovery policy's
decision (jobs/recovery.py); how a runner is started and removed is launch.py's. The actor that runs
this loop is controller.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import ray

from ray_app.config import NAMESPACE, Settings
from ray_app.jobs.errors import StoreError
from ray_app.jobs.job import Job
from sdk.contract import ErrorType
from ray_app.jobs.states import JobState
from ray_app.jobs import recovery
from ray_app.runtime import deaths, launch, runtime_env
from ray_app.runtime.environments import EnvironmentBuilds
from ray_app.runtime.node_envs import NodeWarmUp
from ray_app.jobs.recovery import Action, Decision
from ray_app.runtime.registry import TrainerRegistry, UnknownTrainer
from ray_app.runtime.gang import Gang, RankLost
from ray_app.runtime.runner import kill_orphaned_group
from ray_app.scheduling.queue import Held, JobQueue
from ray_app.store.client import StoreClient

log = logging.getLogger("ray_app.controller")

PLACEMENT_NEWS_S = 3.0  # a job still unplaced this long after its launch is told what it waits for


@dataclass
class AttemptHandle:
    job_id: str
    attempt: int
    trace_id: str
    gang: Gang  # the attempt's runners, one per rank (runtime/gang.py)
    created: float = field(default_factory=time.monotonic)
    placement: Any = None  # the attempt's placement group: its resources, reserved
    waiting_said: bool = False  # the job was told what its placement waits for
    placed: asyncio.Task | None = None
    ready: asyncio.Task | None = None
    run: asyncio.Task | None = None
    terminate: asyncio.Task | None = None
    node_id: str | None = None
    stall_warned: bool = False


def _ended(att: AttemptHandle, outcome: dict[str, Any] | None) -> dict[str, Any]:
    """How an attempt ended, for its row in the job's attempt history (store/attempts.py)."""
    outcome = outcome or {}
    return {"node_id": att.node_id, "exit_code": outcome.get("returncode"), "signal": outcome.get("signal")}


def _since(ts: datetime | None) -> float | None:
    return None if ts is None else (datetime.now(UTC) - ts).total_seconds()


class Reconciler:
    """The controller's logic, separate from the actor (controller.py) so that it reads in one sitting."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.store = StoreClient(settings)
        self.registry = TrainerRegistry(settings.trainer_paths)
        self.attempts: dict[str, AttemptHandle] = {}
        self._background: set[asyncio.Task] = set()  # held so the loop does not drop them mid-way
        # called when something an attempt waited on has happened (its runner is ready, its run
        # ended): the loop then reacts at once instead of at its next tick
        self.wake: Any = lambda: None
        self.environments = EnvironmentBuilds(settings, self.store, lambda: self.wake())
        self.nodes = NodeWarmUp(settings)  # the other nodes' environments (node_envs.py)
        self.queue = JobQueue(settings, self.store, self.registry)  # who is offered to Ray next
        self._warmed = False
        self._adopted = False

    # ------------------------------------------------------------------ loop

    async def tick(self) -> None:
        if not self._warmed:  # the bundled trainers' environments, before the first job needs one
            self._warmed = True
            try:
                started = await self.environments.warm_up(self.registry)
            except Exception:
                log.exception("could not start building the trainers' environments")
            else:
                if started:
                    log.info("building trainer environments ahead of jobs: %s", ", ".join(started))
        try:
            await self.nodes.check()
        except Exception:
            log.exception("could not look for nodes to warm up")
        found: set[tuple[str, int]] = set()  # runners that were started before this controller
        runners: list[tuple[str, str, int]] = []
        if not self._adopted:  # once, as a (re)started controller
            self._adopted = True
            try:
                runners = await asyncio.to_thread(launch.runners)
            except Exception:
                log.exception("could not list the runners")
            found = {(job_id, attempt) for _, job_id, attempt in runners}
        # the jobs followed (a runner, or RUNNING) come whole from the store; the ones waiting in
        # the queue are read by the queue itself, lightly (ten thousand may wait)
        jobs = await self.store.jobs_to_follow([*self.attempts, *(job_id for job_id, _ in found)])
        active = {j.id: j for j in jobs}
        if runners:  # runners no one followed, of jobs that ended meanwhile
            try:
                await self._adopt_runners_of_ended_jobs(runners, set(active))
            except Exception:
                log.exception("could not look for the runners of jobs that ended meanwhile")
        for job_id in list(self.attempts):
            if job_id not in active:
                await self._finish(self.attempts.pop(job_id), reason="job is final")
                self._publish_model(job_id)
            elif self.attempts[job_id].attempt != active[job_id].attempt:  # requeued: back to the queue
                await self._finish(self.attempts.pop(job_id), reason="superseded by a new attempt")
        # a job with a runner is followed; a running job without one is recovered; the others
        # wait in the queue, which offers them to Ray in its order (ray_app/scheduling)
        followed = [j for j in jobs if j.id in self.attempts or j.state is JobState.RUNNING
                    or (j.id, j.attempt) in found]
        for job in followed:
            await self._reconcile_safely(job)
        held = [Held(active[a.job_id], a.created, _placed(a)) for a in self.attempts.values() if a.job_id in active]
        try:
            waiting = await self.queue.waiting({j.id for j in followed} | set(self.attempts))
            admitted = await self.queue.schedule(waiting, held)
        except Exception:
            log.exception("the scheduling pass failed")
            return
        for job_id in admitted:
            try:
                job = await self.store.get_job(job_id)
            except StoreError:  # gone meanwhile
                continue
            if job.state in (JobState.PENDING, JobState.QUEUED) and job.id not in self.attempts:
                await self._reconcile_safely(job)

    async def _reconcile_safely(self, job: Job) -> None:
        try:
            await self._reconcile(job)
        except StoreError as exc:  # lost a race with a callback: the next tick sees the truth
            log.info("[TRACE:%s] job %s: %s", job.trace_id, job.id, exc.detail)
        except Exception:
            log.exception("[TRACE:%s] reconcile of job %s failed", job.trace_id, job.id)

    async def _adopt_runners_of_ended_jobs(self, runners: list[tuple[str, str, int]], active: set[str]) -> None:
        """A job that ends while the controller restarts is never active again, so no tick would
        attach to its runner: the runner (and its reserved resources) would stay forever, and its
        model would not be published. Such runners are followed once here, so that the loop ends
        them as it ends every finished job's (terminate, remove, the attempt's exit, the model)."""
        for name, job_id, attempt in runners:
            if job_id in active or job_id in self.attempts:
                continue
            try:
                actor = ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:  # gone meanwhile
                continue
            att = await asyncio.to_thread(_follow, job_id, attempt, "", name, actor)
            att.ready = asyncio.create_task(att.gang.ready())
            await asyncio.wait([att.ready], timeout=10)  # a runner that answers is terminated, not only removed
            self.attempts[job_id] = att
            log.info("job %s ended while no controller followed it: ending its runner %s", job_id, name)

    def _publish_model(self, job_id: str) -> None:
        """A job that ended: its model to MLflow, if it succeeded with a run (the task decides)."""
        if self.settings.mlflow_tracking_uri:
            from ray_app.serving.mlflow_models import publish_model

            publish_model.remote(self.settings, job_id)

    async def _reconcile(self, job: Job) -> None:
        att = self.attempts.get(job.id)  # (an attempt superseded meanwhile was ended by the tick)
        if att is None:
            att = await self._attach_or_launch(job)
            if att is None:
                return
            self.attempts[job.id] = att
        if att.run is not None and att.run.done():
            if _unavailable(att.run):
                att.run = self._ask_again(att, "run")
                return
            await self._attempt_ended(job, att)
            return
        if att.ready is not None and att.ready.done():
            if _unavailable(att.ready):
                att.ready = self._ask_again(att, "ready")
            elif (failure := att.ready.exception()) is not None:
                await self._start_failed(job, att, failure)
                return
            elif att.run is None:
                att.node_id = att.ready.result().get("node_id")
                att.run = asyncio.create_task(att.gang.run())
                att.run.add_done_callback(lambda _: self.wake())
        if job.state is JobState.QUEUED:
            await self._watch_queued(job, att)
        elif job.state is JobState.RUNNING:
            await self._watch_running(job, att)

    # ------------------------------------------------------------------ launching

    async def _attach_or_launch(self, job: Job) -> AttemptHandle | None:
        name = runtime_env.runner_name(job.id, job.attempt)
        try:
            actor = ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            actor = None
        if actor is not None:  # runners from before a controller restart: follow them again
            att = await asyncio.to_thread(_follow, job.id, job.attempt, job.trace_id, name, actor)
            att.ready = asyncio.create_task(att.gang.ready())
            log.info("[TRACE:%s] re-attached to %s", job.trace_id, name)
            return att
        if job.state is JobState.RUNNING:
            await self._apply(job, job.attempt, recovery.on_lost(
                job, "the runner of the running attempt is gone (platform restarted or node lost)"))
            return None
        if job.retry_at is not None:  # a retried attempt, in its backoff (jobs/recovery.py)
            if job.cancel_requested:
                await self.store.transition(job.id, JobState.CANCELLED, "cancelled while waiting to retry",
                                            attempt=job.attempt)
                return None
            if datetime.now(UTC) < job.retry_at:
                return None
            await self.store.set_wait_reason(job.id, job.attempt, None)
        try:
            manifest = await asyncio.to_thread(self.registry.find, job.framework)
            if not await self.environments.ready(job, manifest):
                return None  # PENDING while its trainer's environment is built; its events say so
            launched = await asyncio.to_thread(self._launch, job, name, manifest)
        except Exception as exc:
            await self._apply(job, job.attempt, recovery.on_lost(
                job, f"could not prepare the trainer: {_describe(exc)}", retryable=False))
            return None
        gang, placement = launched
        what = f"runner {name} requested" if gang.size == 1 else \
            f"runners of {gang.size} ranks requested ({name} and its ranks)"
        if job.state is JobState.PENDING:
            await self.store.transition(job.id, JobState.QUEUED, what, attempt=job.attempt)
        elif job.wait_reason is not None:  # it waited in the queue: its turn came
            await self.store.set_wait_reason(job.id, job.attempt, None)
            await self.store.add_platform_event(job.id, "scheduled", f"its turn in the queue came: {what}")
        att = AttemptHandle(job.id, job.attempt, job.trace_id, gang, placement=placement)
        if placement is not None:
            att.placed = asyncio.create_task(_await(placement.ready()))
            att.placed.add_done_callback(lambda _: self.wake())
        att.ready = asyncio.create_task(gang.ready())
        att.ready.add_done_callback(lambda _: self.wake())
        return att

    def _launch(self, job: Job, name: str, manifest: Any) -> tuple[Gang, Any]:
        # in a thread: it uploads the trainer's folders to Ray (environments.ready() has made
        # sure its venv is built, so no build happens here)
        return launch.launch_gang(self.settings, manifest, job, name, store=self.store.handle)

    # ------------------------------------------------------------------ watching

    async def _watch_queued(self, job: Job, att: AttemptHandle) -> None:
        if job.cancel_requested:  # nothing has started training: cancel at once
            await self._kill(att)
            await self.store.transition(job.id, JobState.CANCELLED, "cancelled while queued", attempt=att.attempt)
            self.attempts.pop(job.id, None)
            return
        if job.preempt_requested_at is not None:  # nothing has started training: back to the queue at once
            await self._kill(att)
            await self.store.requeue_preempted(job.id, att.attempt, "preempted before its trainer started",
                                               _ended(att, None))
            self.attempts.pop(job.id, None)
            return
        waited = time.monotonic() - att.created
        unplaced = att.placed is not None and not att.placed.done()
        if unplaced and waited > self.settings.placement_timeout_s:
            await self._fail(job, att, f"the trainer could not be placed within "
                             f"{self.settings.placement_timeout_s:g}s: {self._room(job)}", ErrorType.RESOURCE_ERROR)
        elif unplaced and waited > PLACEMENT_NEWS_S and not att.waiting_said:
            att.waiting_said = True
            await self.store.set_wait_reason(job.id, att.attempt, f"waiting for room: {self._room(job)} yet; "
                                             f"failing at {self.settings.placement_timeout_s:g}s")
        elif att.waiting_said and not unplaced:
            att.waiting_said = False
            await self.store.set_wait_reason(job.id, att.attempt, None)

    def _room(self, job: Job) -> str:
        """What the job's placement waits for, in words (per worker, and how the workers go)."""
        try:
            custom = launch.custom_resources(self.registry.get(job.framework))
        except UnknownTrainer:
            custom = {}
        worker = f"num_gpus={job.num_gpus:g}, num_cpus={job.num_cpus}" + "".join(
            f", {k}={v:g}" for k, v in custom.items())
        if job.workers == 1:
            return f"no node has {worker} free"
        return (f"no {job.workers} workers of {worker} each are free together "
                f"({job.placement_strategy}; a gang is placed all or nothing)")

    async def _watch_running(self, job: Job, att: AttemptHandle) -> None:
        stopping = [(job.cancel_requested_at, self.settings.cancel_grace_s)] if job.cancel_requested else []
        if job.preempt_requested_at is not None:  # its checkpoint, then back to the queue
            stopping.append((job.preempt_requested_at, self.settings.preemption_grace_s))
        if stopping:
            due = any((_since(at) or 0.0) >= grace for at, grace in stopping)
            if att.terminate is None and due:
                att.terminate = asyncio.create_task(att.gang.terminate(self.settings.kill_grace_s))
            return  # the attempt's end (processes gone) turns into CANCELLED, or requeues it
        silent = _since(job.last_heartbeat_at or job.started_at)
        if silent is not None and silent > self.settings.heartbeat_timeout_s:
            if await self._actor_alive(att):
                await self._fail(job, att, f"no heartbeat for {silent:.0f}s (timeout "
                                 f"{self.settings.heartbeat_timeout_s:g}s); the runner is alive, "
                                 "the trainer is not reporting", ErrorType.TIMEOUT_ERROR)
            return  # a dead runner ends the run task: the attempt's end decides
        stalled = _since(job.last_progress_at)
        if stalled is None:
            return
        if stalled > self.settings.stall_timeout_s:
            await self._fail(job, att, f"heartbeats arrive but epoch/step has not advanced for "
                             f"{stalled:.0f}s (stall timeout {self.settings.stall_timeout_s:g}s)",
                             ErrorType.TIMEOUT_ERROR)
        elif stalled > self.settings.stall_timeout_s / 2 and not att.stall_warned:
            att.stall_warned = True
            await self.store.add_platform_event(job.id, "stalled",
                                  f"no progress for {stalled:.0f}s (epoch={job.epoch}, step={job.step}); "
                                  f"failing at {self.settings.stall_timeout_s:g}s", "warning")

    def _ask_again(self, att: AttemptHandle, method: str) -> asyncio.Task:
        """The runner did not answer (its node, or the network to it, is gone for now), which is
        not yet death: the GCS decides that, by its node health checks. Ask again, after a pause;
        the call returns once the runner answers (both methods re-attach) or fails once it is
        known dead, with the cause."""
        log.warning("[TRACE:%s] runner of attempt %d is unreachable; waiting for it to answer or for "
                    "Ray to declare it dead", att.trace_id, att.attempt)

        async def again() -> Any:
            await asyncio.sleep(1.0)
            return await getattr(att.gang, method)()

        task = asyncio.create_task(again())
        task.add_done_callback(lambda _: self.wake())
        return task

    async def _runner_death(self, att: AttemptHandle, exc: BaseException) -> deaths.RunnerDeath:
        if isinstance(exc, RankLost):  # one rank of a gang: its runner, its node, said so
            death = await deaths.runner_death(self.store, exc.actor, att.job_id, att.attempt, att.trace_id,
                                              exc.node_id, exc.cause, _describe)
            return dataclasses.replace(death, reason=f"rank {exc.rank}: {death.reason}")
        return await deaths.runner_death(self.store, att.gang.leader, att.job_id, att.attempt, att.trace_id,
                                         att.node_id, exc, _describe)

    async def _start_failed(self, job: Job, att: AttemptHandle, exc: BaseException) -> None:
        """Retried when the runner's node or worker was lost; failed when starting it failed."""
        death = await self._runner_death(att, exc)
        await self._apply(job, att.attempt, recovery.on_lost(job, f"runner could not start: {death.reason}", death.retryable))
        self.attempts.pop(job.id, None)
        await self._kill(att)

    async def _actor_alive(self, att: AttemptHandle) -> bool:
        try:
            await asyncio.wait_for(att.gang.status(), timeout=10)
            return True
        except Exception:
            return False

    # ------------------------------------------------------------------ endings

    async def _attempt_ended(self, job: Job, att: AttemptHandle) -> None:
        assert att.run is not None  # ended: its run task is done
        try:
            outcome, error = att.run.result(), None
        except Exception as exc:
            outcome, error = None, (await self._runner_death(att, exc)).reason
            await self._kill_orphans(att)
        job = await self.store.get_job(job.id)
        decision = recovery.on_exit(job, outcome, error)
        log.info("[TRACE:%s] attempt %d ended (%s): %s %s", att.trace_id, att.attempt,
                 outcome or error, decision.action.value, decision.reason)
        await self._apply(job, att.attempt, decision, _ended(att, outcome))
        self.attempts.pop(job.id, None)
        await self._kill(att)

    async def _apply(self, job: Job, attempt: int, decision: Decision, ended: dict[str, Any] | None = None) -> None:
        """Carry out the recovery policy's decision on `attempt` (compare-and-set: refused when
        the job has moved on meanwhile)."""
        if decision.action is Action.CANCEL:
            await self.store.transition(job.id, JobState.CANCELLED, "cancelled; no process of the trainer remains",
                                        attempt=attempt, ended=ended)
        elif decision.action is Action.RETRY:
            assert decision.error_type is not None
            delay = recovery.retry_delay_s(attempt, self.settings.retry_backoff_s, self.settings.retry_backoff_max_s)
            await self.store.requeue(job.id, attempt, decision.reason, decision.error_type, ended=ended,
                                     delay_s=delay)
        elif decision.action is Action.FAIL:
            await self.store.transition(job.id, JobState.FAILED, decision.reason, attempt=attempt,
                                        error_type=decision.error_type, ended=ended)
        elif decision.action is Action.PREEMPT:
            await self.store.requeue_preempted(job.id, attempt, decision.reason, ended)

    async def _fail(self, job: Job, att: AttemptHandle, reason: str, error_type: ErrorType) -> None:
        await self.store.transition(job.id, JobState.FAILED, reason, attempt=att.attempt,
                                    error_type=error_type.value)
        self.attempts.pop(job.id, None)
        await self._finish(att, reason=reason, grace_s=0)

    async def _finish(self, att: AttemptHandle, reason: str, grace_s: float | None = None) -> None:
        """The job is final: let the trainer exit by itself for a moment, then end it."""
        grace = self.settings.cancel_grace_s if grace_s is None else grace_s

        async def finish() -> None:
            outcome = None
            if att.run is not None and grace > 0:
                try:
                    outcome = await asyncio.wait_for(asyncio.shield(att.run), timeout=grace)
                except Exception:
                    pass
            await self._kill(att)
            try:  # the attempt's row was written with the job's end (its done): add node and exit
                await self.store.attempt_exited(att.job_id, att.attempt, _ended(att, outcome))
            except Exception as exc:
                log.warning("[TRACE:%s] attempt %d's exit not recorded: %s", att.trace_id, att.attempt, exc)

        task = asyncio.create_task(finish())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _kill(self, att: AttemptHandle) -> None:
        placed = att.ready is not None and att.ready.done() and att.ready.exception() is None
        exited = att.run is not None and att.run.done() and not att.run.cancelled() and att.run.exception() is None
        # a run that returned saw its process group end (runner.py): nothing to terminate, and
        # the next job waiting for these resources gets them a round trip sooner
        if placed and not exited:  # an actor never placed has no process to end: it is only removed
            grace = self.settings.kill_grace_s
            try:
                await asyncio.wait_for(att.gang.terminate(grace), grace + 10)
            except Exception:
                await self._kill_orphans(att)
        launch.remove(att.gang, att.placement)

    async def _kill_orphans(self, att: AttemptHandle) -> None:
        await kill_orphaned_group(self.store, att.job_id, att.attempt, att.trace_id)


def _follow(job_id: str, attempt: int, trace_id: str, name: str, actor: Any) -> AttemptHandle:
    """An attempt whose runners were started before this controller: its other ranks and its
    placement group found by their names, and asked whether they are ready (which re-attaches to
    their run). Blocking (GCS calls): run it in a thread; the tasks start on the loop."""
    gang = launch.find_gang(job_id, attempt, actor)
    return AttemptHandle(job_id, attempt, trace_id, gang, placement=launch.find_placement(name))


def _placed(att: AttemptHandle) -> bool:
    """Whether Ray has placed the attempt (its resources are reserved): its placement group is
    ready, or its runners answered."""
    done = att.placed if att.placed is not None else att.ready
    return done is not None and done.done() and not done.cancelled() and done.exception() is None


async def _await(ref: Any) -> Any:
    return await ref


def _unavailable(task: asyncio.Task) -> bool:
    return not task.cancelled() and isinstance(task.exception(), ray.exceptions.ActorUnavailableError)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"[:2000]
