"""JobController: the detached actor that launches, watches, cancels and retries attempts
(DESIGN §5, §6).

It runs one reconcile loop (reconciler.py) on a thread of its own: a tick every
`controller_interval_s`, or at once when something is worth reacting to (the API created or
cancelled a job; a runner became ready or its run ended).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from typing import Any

import ray

from ray_app.config import CONTROLLER_ACTOR, NAMESPACE, Settings
from ray_app.runtime import runtime_env
from ray_app.runtime.reconciler import Reconciler

log = logging.getLogger("ray_app.controller")


@ray.remote(num_cpus=0, max_restarts=-1)
class JobController:
    """The actor: the reconcile loop runs on its own thread with its own event loop."""

    def __init__(self, settings: Settings):
        # the platform's Settings object (read from the environment once, where the platform
        # starts); nothing here reads VTP_* variables again
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.reconciler = Reconciler(settings)
        # the sweeps' Tune drivers: started, started again after a restart, stopped (sweeps/)
        from ray_app.sweeps.supervisor import SweepSupervisor

        self.sweeps = SweepSupervisor(settings, self.reconciler.store)
        self.ticks = 0
        self.tick_ms: deque[float] = deque(maxlen=5000)
        # old log lines to S3, on a thread of its own: never the store's (the single writer) work
        from ray_app.store.log_archive import start_archiving

        self._archiving = start_archiving(self.reconciler.settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._sweeps_due = False  # a sweep was created or cancelled: check the sweeps on the next pass
        threading.Thread(target=asyncio.run, args=(self._run(),), daemon=True, name="reconcile").start()

    async def _run(self) -> None:
        interval = self.reconciler.settings.controller_interval_s
        self._wakeup = asyncio.Event()
        self.reconciler.wake = self._wakeup.set
        self._loop = asyncio.get_running_loop()
        while True:
            self._wakeup.clear()
            started = time.perf_counter()
            try:
                await self.reconciler.tick()
            except Exception:
                log.exception("controller tick failed")
            self.tick_ms.append((time.perf_counter() - started) * 1000)
            try:
                due, self._sweeps_due = self._sweeps_due, False
                await self.sweeps.check(force=due)
            except Exception:
                log.exception("sweep supervision failed")
            self.ticks += 1
            try:  # a tick every `interval`, or at once when woken
                await asyncio.wait_for(self._wakeup.wait(), interval)
            except TimeoutError:
                pass

    def wake(self, sweeps: bool = False) -> None:
        """Reconcile now (the API calls this after creating or cancelling a job): a new job is
        launched without waiting for the next tick. Fire-and-forget; the tick covers a lost one.
        `sweeps`: a sweep was created or cancelled, so the sweeps are checked on this pass too
        rather than on their own slower cadence (its driver starts, or stops, a second sooner)."""
        if sweeps:
            self._sweeps_due = True
        if self._loop is not None and self._wakeup is not None:
            self._loop.call_soon_threadsafe(self._wakeup.set)

    def queue(self) -> dict[str, Any]:
        """The last scheduling pass's decision: the queue in order, the projects' use (GET /v1/queue)."""
        return self.reconciler.queue.snapshot

    def scheduling_times(self) -> dict[str, list[float]]:
        """The recent passes' times in milliseconds (bench/queue_scale.py): the policy's decision
        alone, the whole scheduling pass, and the whole tick."""
        queue = self.reconciler.queue
        return {"decide_ms": list(queue.decide_ms), "pass_ms": list(queue.pass_ms), "tick_ms": list(self.tick_ms)}

    def status(self) -> dict[str, Any]:
        return {"ticks": self.ticks, "attempts": sorted(
            runtime_env.runner_name(a.job_id, a.attempt) for a in self.reconciler.attempts.values()),
            "nodes": dict(self.reconciler.nodes.states)}  # the other nodes' warm-ups (node_envs.py)


def ensure_controller(settings: Settings) -> Any:
    return JobController.options(  # type: ignore[attr-defined]  # a @ray.remote class: Ray's decorator typing does not carry .options
        name=CONTROLLER_ACTOR, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
    ).remote(settings)
