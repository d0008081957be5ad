"""Trainer environments built ahead of time, and jobs told when they must wait for one.

A trainer with `env: venv` runs in its own virtualenv, built on first use (runtime/venvs.py; about
40 s for Ultralytics here). Built inside a launch, that was a silent minute in PENDING for the
first job, and it held the controller's loop. Instead:

- the controller builds the bundled trainers' environments (those the platform ships, under
  trainers/) as soon as it starts, in a thread (`warm_up`), so a fresh platform has them before
  its first job asks (`vtp up` also builds them before it returns);
- a job whose environment is not built yet waits in PENDING without holding the loop, and its
  events say so: `environment_building` once, `environment_progress` per build step, then
  `environment_ready` with the seconds it took (or the job fails with the build's error).

One build per trainer at a time (and venvs.build holds a file lock, so another process building
the same environment is waited for, not repeated). This is the controller's node; the other nodes
of a cluster are warmed, and build on demand, by node_envs.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from ray_app.config import REPO_ROOT, Settings
from ray_app.jobs.job import Job
from ray_app.runtime import venvs
from ray_app.runtime.node_envs import progress_message
from ray_app.runtime.registry import TrainerManifest, TrainerRegistry
from ray_app.store.client import StoreClient

log = logging.getLogger("ray_app.environments")
BUNDLED = REPO_ROOT / "trainers"


class EnvironmentBuildFailed(RuntimeError):
    pass


def needs_build(settings: Settings, manifest: TrainerManifest) -> bool:
    return manifest.env == "venv" and venvs.find_built(settings.venvs_dir, manifest) is None


def bundled(registry: TrainerRegistry) -> list[TrainerManifest]:
    """The trainers the platform ships (not plugins from other trainer paths)."""
    return [m for m in registry.trainers.values() if m.folder.resolve().parent == BUNDLED.resolve()]


def build_bundled(settings: Settings, log_line: Any = print) -> list[str]:
    """Build every bundled trainer's environment that is not built (what `vtp up` runs); the
    names built."""
    built = []
    for manifest in bundled(TrainerRegistry(settings.trainer_paths)):
        if needs_build(settings, manifest):
            started = time.monotonic()
            log_line(f"building the {manifest.name} trainer's environment (once per platform)")
            venvs.build(settings.venvs_dir, manifest, log=lambda _: None)
            log_line(f"{manifest.name} trainer's environment ready in {time.monotonic() - started:.0f}s")
            built.append(manifest.name)
    return built


@dataclass
class Build:
    trainer: str
    task: asyncio.Task
    started: float = field(default_factory=time.monotonic)
    steps: list[str] = field(default_factory=list)
    waiting: set[str] = field(default_factory=set)  # job ids told that they wait for it


class EnvironmentBuilds:
    """The controller's environment builds: started ahead (warm_up) or by a job that needs one."""

    def __init__(self, settings: Settings, store: StoreClient, wake: Any):
        self.settings = settings
        self.store = store
        self.wake = wake  # the controller's: a finished build launches its jobs at once
        self.builds: dict[str, Build] = {}
        self._tasks: set[asyncio.Future] = set()  # event writes in flight, held until done
        self._one_at_a_time: asyncio.Semaphore | None = None  # builds share the machine's CPUs

    async def warm_up(self, registry: TrainerRegistry) -> list[str]:
        """Start building the bundled trainers' environments that are missing; their names."""
        missing = await asyncio.to_thread(
            lambda: [m for m in bundled(registry) if needs_build(self.settings, m)])
        for manifest in missing:
            if manifest.name not in self.builds:
                self._start(manifest)
        return [m.name for m in missing]

    async def ready(self, job: Job, manifest: TrainerManifest) -> bool:
        """True when the job's trainer environment is built (or needs none); False while it is
        being built (the job is told, once); EnvironmentBuildFailed when the build failed."""
        build = self.builds.get(manifest.name)
        if build is None:
            if not await asyncio.to_thread(needs_build, self.settings, manifest):
                return True
            build = self._start(manifest)
        if build.task.done():
            return self._outcome(build, job)
        if job.id not in build.waiting:
            build.waiting.add(job.id)
            await self.store.add_news(job.id, "environment_building",
                                      f"waiting for the {manifest.name} trainer's environment: it is being built "
                                      "(first use on this platform; once built it is reused)",
                                      {"trainer": manifest.name, "steps_done": len(build.steps)})
        return False

    def _outcome(self, build: Build, job: Job) -> bool:
        build.waiting.discard(job.id)
        exc = build.task.exception()
        if not build.waiting:
            self.builds.pop(build.trainer, None)  # a failed build is tried again by the next job
        if exc is not None:
            raise EnvironmentBuildFailed(f"the {build.trainer} trainer's environment could not be built: {exc}")
        return True

    def _start(self, manifest: TrainerManifest) -> Build:
        loop = asyncio.get_running_loop()

        def step(line: str) -> None:  # from the build's thread, once the build (below) exists
            loop.call_soon_threadsafe(self._progress, build, line)

        if self._one_at_a_time is None:
            self._one_at_a_time = asyncio.Semaphore(1)
        gate = self._one_at_a_time

        async def run() -> None:
            async with gate:
                await asyncio.to_thread(venvs.build, self.settings.venvs_dir, manifest, step)

        build = Build(manifest.name, asyncio.create_task(run()))  # it runs at the next await
        build.task.add_done_callback(lambda _: self._finished(build))
        self.builds[manifest.name] = build
        log.info("building the %s trainer's environment", manifest.name)
        return build

    def _progress(self, build: Build, line: str) -> None:
        build.steps.append(line)
        message = progress_message(build.trainer, len(build.steps), line)
        for job_id in build.waiting:
            self._spawn(self.store.add_news(job_id, "environment_progress", message,
                                            {"trainer": build.trainer, "step": len(build.steps)}))

    def _finished(self, build: Build) -> None:
        seconds = round(time.monotonic() - build.started, 1)
        exc = None if build.task.cancelled() else build.task.exception()
        if exc is None:
            log.info("the %s trainer's environment is ready (%.1fs)", build.trainer, seconds)
            if not build.waiting:
                self.builds.pop(build.trainer, None)
        else:
            log.error("the %s trainer's environment could not be built: %s", build.trainer, exc)
        for job_id in build.waiting:
            if exc is None:
                self._spawn(self.store.add_news(job_id, "environment_ready",
                                                f"the {build.trainer} trainer's environment is ready "
                                                f"(built in {seconds:g}s)",
                                                {"trainer": build.trainer, "seconds": seconds}))
        self.wake()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
