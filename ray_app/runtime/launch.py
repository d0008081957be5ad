"""Starting and removing an attempt's runner on Ray: its resources, reserved, and its actor.

The controller (runtime/controller.py) decides when; this module knows how: the resources a job
asks for (CPUs, GPUs, memory, the trainer's custom resources) are reserved as a placement group
first, so that "not placed" means exactly "no node has them free", and the TrainerRunner actor
(runtime/runner.py) is scheduled into it, detached and named after the attempt, so a restarted
controller finds it again.
"""

from __future__ import annotations

import logging
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from ray_app.config import NAMESPACE, Settings
from ray_app.jobs.job import Job
from ray_app.runtime import contract_env, process_env, runtime_env
from ray_app.runtime.registry import TrainerManifest
from ray_app.runtime.runner import TrainerRunner

log = logging.getLogger("ray_app.controller")


def resources_of(job: Job, manifest: TrainerManifest) -> tuple[dict[str, float], dict[str, float]]:
    """(Ray's own resources: CPU, GPU, memory in bytes; the trainer's custom resources)."""
    resources: dict[str, float] = {"CPU": job.num_cpus if job.num_cpus is not None else 1,
                                   "GPU": job.num_gpus or 0}
    if job.memory_mb:
        resources["memory"] = int(job.memory_mb) * 1024 * 1024
    custom = {k: v for k, v in manifest.resources.custom.items() if k not in ("CPU", "GPU", "memory")}
    return resources, custom


def launch_runner(settings: Settings, manifest: TrainerManifest, job: Job, name: str,
                  store: Any = None) -> tuple[Any, Any]:
    """The runner actor of the job's current attempt, and its placement group (None when the job
    asks for nothing); `store` is the store actor's handle, handed on to the runner. Blocking (it
    may build the trainer's venv): run it in a thread."""
    env = contract_env.build(settings, job)
    renv = runtime_env.prepare(settings, manifest, env.public,
                               log=lambda m: log.info("[TRACE:%s] %s", job.trace_id, m))
    resources, custom = resources_of(job, manifest)
    # the runner's worker starts without the trainer's runtime_env (no setup_worker.py), and
    # the runner applies it to the trainer process itself where it can (process_env.py)
    runner_renv, process_spec = process_env.split(renv, pooled=settings.pooled_runners)
    options: dict[str, Any] = {
        "name": name, "namespace": NAMESPACE, "lifetime": "detached", "max_restarts": 0,
        "num_cpus": resources["CPU"], "num_gpus": resources["GPU"],
    }
    if runner_renv:
        options["runtime_env"] = runner_renv
    if "memory" in resources:
        options["memory"] = resources["memory"]
    if custom:
        options["resources"] = custom
    # Reserve the resources first: "not placed" then means exactly "no node has them free",
    # apart from the time a worker and its runtime_env take to start.
    placement = None
    bundle = {k: v for k, v in {**resources, **custom}.items() if v}
    if bundle:
        placement = placement_group([bundle], strategy="STRICT_PACK", name=name, lifetime="detached")
        options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(placement, placement_group_bundle_index=0)
    log.info("[TRACE:%s] launching %s (cpus=%s gpus=%s%s)", job.trace_id, name,
             resources["CPU"], resources["GPU"], "".join(f" {k}={v:g}" for k, v in custom.items()))
    actor = TrainerRunner.options(**options).remote(  # type: ignore[attr-defined]  # a @ray.remote class: Ray's decorator typing does not carry .options
        settings, job.id, job.attempt, job.trace_id, manifest.entrypoints.train, env.secret, process_spec, store,
    )
    return actor, placement


def runners() -> list[tuple[str, str, int]]:
    """(actor name, job id, attempt) of every runner actor alive in the platform's namespace."""
    return [(a["name"], *parsed) for a in ray.util.list_named_actors(all_namespaces=True)
            if a.get("namespace") == NAMESPACE and (parsed := runtime_env.parse_runner_name(a["name"]))]


def find_placement(name: str) -> Any:
    """The placement group of a runner from before a controller restart, if it has one."""
    try:
        return ray.util.get_placement_group(name)
    except ValueError:
        return None


def remove(actor: Any, placement: Any) -> None:
    """The runner actor and its reserved resources go (its processes are ended before: the
    runner's terminate, or kill_orphaned_group)."""
    try:
        ray.kill(actor, no_restart=True)
    except Exception:
        pass
    if placement is not None:
        try:
            remove_placement_group(placement)
        except Exception:
            pass
