"""Trainer environments on every node of a cluster, not only the controller's (issue 18).

A trainer's virtualenv (runtime/venvs.py) is a folder on a node's disk, named by a hash of what
decides its content. The controller builds the bundled trainers' environments on its own node
when it starts (environments.py), and hands a runner the interpreter's path there. Another node
has its own disk, so:

- **warm-up**: the controller watches the cluster's nodes; each node that joins gets a task,
  pinned to it, that builds the bundled trainers' environments there before jobs need them
  (`warm_node`, started by `NodeWarmUp`);
- **on demand**: a runner whose node lacks its trainer's environment (a plugin trainer, or a job
  that came before the warm-up finished) builds it there from the trainer's own folder, and the
  job's events say so (`environment_building` ... `environment_ready`, with the node), as they do
  for a build on the controller's node.

Where a node keeps them: its own `VTP_TRAINER_VENVS_DIR`, from the environment its `ray start`
ran with (so an operator can put them on a node's local disk), else the same folder as the
controller's. Builds of one environment on one node are file-locked (venvs.build): a runner
and the warm-up never build it twice.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ray_app.config import Settings
from ray_app.runtime import venvs
from ray_app.runtime.registry import read_manifest

log = logging.getLogger("ray_app.environments")
NODE_CHECK_S = 10.0  # how often the controller looks for nodes that joined
PENDING_CHECK_S = 1.0
WARM_TRIES = 3  # warm-ups of one node, the first included
MAX_STEP_CHARS = 300
Say = Callable[[str, str, dict[str, Any]], Coroutine[Any, Any, None]]  # (event type, message, data)


def venvs_root_here(default: Path) -> Path:
    """This node's folder of trainer environments: its own VTP_TRAINER_VENVS_DIR, else `default`."""
    own = os.environ.get("VTP_TRAINER_VENVS_DIR")
    return Path(own) if own else default


def progress_message(trainer: str, step: int, line: str, where: str = "") -> str:
    """The `environment_progress` event's message for one build step (a line of the build's log)."""
    text = line if len(line) <= MAX_STEP_CHARS else line[:MAX_STEP_CHARS] + "…"
    return f"building the {trainer} environment{where}, step {step}: {text}"


def node_id() -> str:
    return ray.get_runtime_context().get_node_id()


async def trainer_python(py_executable: str, trainer_dir: str | None, say: Say) -> str:
    """The trainer's interpreter on this node, for the one the controller named on its own node
    (`<root>/<trainer>-<hash>/bin/python`): the same environment under this node's folder, built
    here first if this node does not have it."""
    controller_venv = venvs.venv_of(Path(py_executable))
    root = venvs_root_here(controller_venv.parent)
    here = root / controller_venv.name
    if venvs.is_built(here):
        return str(venvs.python_of(here))
    if trainer_dir is None:  # nothing to build it from (the runner kept Ray's runtime_env)
        return py_executable
    manifest = read_manifest(Path(trainer_dir))
    built = await asyncio.to_thread(venvs.find_built, root, manifest)
    if built is not None:  # this node's platform differs: its own hash, already built
        return str(venvs.python_of(built))
    where = {"trainer": manifest.name, "node_id": node_id()}
    await say("environment_building",
              f"waiting for the {manifest.name} trainer's environment: it is being built on this job's node "
              "(first use on this node; once built it is reused)", where)
    loop = asyncio.get_running_loop()
    told: list[concurrent.futures.Future] = []

    def step(line: str) -> None:  # in the build's thread: each step is news for the job
        message = progress_message(manifest.name, len(told) + 1, line, " on this job's node")
        told.append(asyncio.run_coroutine_threadsafe(
            say("environment_progress", message, {**where, "step": len(told) + 1}), loop))

    started = time.monotonic()
    venv = await asyncio.to_thread(venvs.build, root, manifest, step)
    await asyncio.gather(*map(asyncio.wrap_future, told))  # the steps' events before `ready`'s
    seconds = round(time.monotonic() - started, 1)
    await say("environment_ready", f"the {manifest.name} trainer's environment is ready on this job's node "
              f"(built in {seconds:g}s)", {**where, "seconds": seconds})
    return str(venvs.python_of(venv))


@ray.remote(num_cpus=0, max_retries=0)
def warm_node(settings: Settings) -> list[str]:
    """On the node it is pinned to: build the bundled trainers' environments it lacks."""
    from ray_app.runtime.environments import build_bundled

    root = venvs_root_here(settings.venvs_dir)
    here = settings.model_copy(update={"trainer_venvs_dir": root})
    return build_bundled(here, log_line=lambda line: print(f"[node warm-up] {line}", flush=True))


class NodeWarmUp:
    """The controller's view of the cluster's nodes: each one that joins is warmed, and a warm-up
    that fails (a full disk, a package index that could not be reached) is tried again, after
    `node_warmup_retry_s` and then twice that, WARM_TRIES times in all; after that the node's jobs
    build what they need themselves, and say so in their events."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.seen: set[str] = set()
        self.pending: dict[str, Any] = {}  # node id -> its warm-up task's ref
        self.states: dict[str, str] = {}  # node id -> how its warm-up went (the controller's status)
        self._tries: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}
        self._next_check = 0.0

    async def check(self) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + NODE_CHECK_S
        if not self.seen:  # the controller's own node is warmed by environments.warm_up
            self.seen.add(node_id())
        alive = {n["NodeID"] for n in await asyncio.to_thread(ray.nodes) if n.get("Alive") and n.get("NodeID")}
        for nid in set(self._retry_at) - alive:  # a node gone meanwhile is not warmed again
            del self._retry_at[nid]
            self.states[nid] += " (the node is gone)"
        for nid in alive:
            if nid not in self.seen:
                self.seen.add(nid)
                self._warm(nid)
            elif now >= self._retry_at.get(nid, float("inf")):
                del self._retry_at[nid]
                self._warm(nid)
        await self._collect()
        if self.pending or self._retry_at:  # a warm-up's end, or its retry, is due soon: look every second
            self._next_check = now + PENDING_CHECK_S

    def _warm(self, nid: str) -> None:
        tries = self._tries[nid] = self._tries.get(nid, 0) + 1
        self.pending[nid] = warm_node.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(nid, soft=False)).remote(self.settings)
        self.states[nid] = f"warming (try {tries} of {WARM_TRIES})"
        log.info("warming node %s: building the bundled trainers' environments there (try %d of %d)",
                 nid, tries, WARM_TRIES)

    async def _collect(self) -> None:
        """Note the warm-ups that ended (a failed one is news, and tried again, not a failure of
        anything else)."""
        if not self.pending:
            return
        done, _ = await asyncio.to_thread(ray.wait, list(self.pending.values()),
                                          num_returns=len(self.pending), timeout=0)
        for nid, ref in list(self.pending.items()):
            if ref not in done:
                continue
            del self.pending[nid]
            try:
                built = await ref
            except Exception as exc:
                self._failed(nid, _last_line(exc))
            else:
                self.states[nid] = "warmed: " + (", ".join(built) if built else "nothing to build")
                log.info("node %s %s", nid, self.states[nid])

    def _failed(self, nid: str, why: str) -> None:
        tries = self._tries[nid]
        if tries < WARM_TRIES:
            wait = self.settings.node_warmup_retry_s * 2 ** (tries - 1)
            self._retry_at[nid] = time.monotonic() + wait
            self.states[nid] = f"failed (try {tries} of {WARM_TRIES}), trying again in {wait:g}s: {why}"
        else:
            self.states[nid] = (f"failed (try {tries} of {WARM_TRIES}), not tried again: jobs there build "
                                f"their trainer's environment themselves: {why}")
        log.warning("node %s: could not build the trainers' environments: %s", nid, self.states[nid])


def _last_line(exc: BaseException) -> str:
    """A task's error names its remote traceback first; its last line says what went wrong."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:MAX_STEP_CHARS]
