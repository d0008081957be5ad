"""Starting and removing an attempt's runners on Ray: its resources, reserved, and its actors.

The controller (runtime/controller.py) decides when; this module knows how: the resources a job
asks for (per worker: CPUs, GPUs, memory, the trainer's custom resources) are reserved as a
placement group first, one bundle per worker, so that "not placed" means exactly "no nodes have
them free", and one TrainerRunner actor (runtime/runner.py) per rank is scheduled into its
worker's bundle, detached and named after the attempt and rank, so a restarted controller finds
them again.
"""

from __future__ import annotations

import logging
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from ray_app.config import NAMESPACE, Settings
from ray_app.jobs.job import Job
from ray_app.jobs import ranks
from ray_app.runtime import contract_env, process_env, runtime_env
from ray_app.runtime.gang import Gang
from ray_app.runtime.registry import TrainerManifest
from ray_app.runtime.runner import TrainerRunner

log = logging.getLogger("ray_app.controller")


def layout_of(job: Job, manifest: TrainerManifest) -> ranks.Layout:
    """The job's ranks (jobs/ranks.py); the API refused the jobs for which this raises."""
    return ranks.layout(manifest.name, manifest.distributed, job.workers, job.num_gpus or 0, job.num_cpus,
                        job.memory_mb, "SPREAD" if job.placement_strategy == "SPREAD" else "PACK")


def custom_resources(manifest: TrainerManifest) -> dict[str, float]:
    """The trainer's custom resources, per worker (`ray start --resources` labels)."""
    return {k: v for k, v in manifest.resources.custom.items() if k not in ("CPU", "GPU", "memory")}


def worker_bundle(job: Job, manifest: TrainerManifest) -> dict[str, float]:
    """What one worker reserves: a bundle of the gang's placement group."""
    return bundle_of(job.num_cpus, job.num_gpus, job.memory_mb, manifest)


def bundle_of(num_cpus: float | None, num_gpus: float | None, memory_mb: int | None,
              manifest: TrainerManifest) -> dict[str, float]:
    """worker_bundle from a job's resource fields (the queue reads only those)."""
    bundle: dict[str, float] = {"CPU": num_cpus if num_cpus is not None else 1, "GPU": num_gpus or 0,
                                **custom_resources(manifest)}
    if memory_mb:
        bundle["memory"] = int(memory_mb) * 1024 * 1024
    return {k: v for k, v in bundle.items() if v}


def launch_gang(settings: Settings, manifest: TrainerManifest, job: Job, name: str,
                store: Any = None) -> tuple[Gang, Any]:
    """The runner actors of the job's current attempt, one per rank (runtime/gang.py), and their
    placement group: one bundle per worker, placed all or nothing (None when the job asks for
    nothing); `store` is the store actor's handle, handed on to the runners. Blocking (it may
    build the trainer's venv): run it in a thread."""
    env = contract_env.build(settings, job)
    renv = runtime_env.prepare(settings, manifest, env.public,
                               log=lambda m: log.info("[TRACE:%s] %s", job.trace_id, m))
    layout = layout_of(job, manifest)
    custom = custom_resources(manifest)
    # the runner's worker starts without the trainer's runtime_env (no setup_worker.py), and
    # the runner applies it to the trainer process itself where it can (process_env.py)
    runner_renv, process_spec = process_env.split(renv, pooled=settings.pooled_runners)
    # Reserve the resources first: "not placed" then means exactly "no node has them free",
    # apart from the time a worker and its runtime_env take to start. One worker keeps its
    # bundle on one node as before; a gang is packed onto few nodes or spread over many.
    placement = None
    bundle = worker_bundle(job, manifest)
    if bundle:
        strategy = "STRICT_PACK" if layout.workers == 1 else layout.strategy
        placement = placement_group([dict(bundle) for _ in range(layout.workers)], strategy=strategy, name=name,
                                    lifetime="detached")
    log.info("[TRACE:%s] launching %s: %d rank(s) on %d worker(s) of %s (%s)", job.trace_id, name,
             layout.world_size, layout.workers, bundle, layout.strategy)
    actors = []
    for rank in layout.ranks:
        options: dict[str, Any] = {
            "name": runtime_env.runner_name(job.id, job.attempt, rank.rank), "namespace": NAMESPACE,
            "lifetime": "detached", "max_restarts": 0, "num_cpus": rank.num_cpus, "num_gpus": rank.num_gpus,
        }
        if runner_renv:
            options["runtime_env"] = runner_renv
        if rank.memory_mb:
            options["memory"] = rank.memory_mb * 1024 * 1024
        if custom:  # a worker's labels, shared by its ranks
            options["resources"] = {k: v / layout.per_worker for k, v in custom.items()}
        if placement is not None:
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                placement, placement_group_bundle_index=rank.worker)
        actors.append(TrainerRunner.options(**options).remote(  # type: ignore[attr-defined]  # a @ray.remote class: Ray's decorator typing does not carry .options
            settings, job.id, job.attempt, job.trace_id, manifest.entrypoints.train, env.secret, process_spec, store,
            rank.rank))
    return Gang(actors, layout), placement


def runners() -> list[tuple[str, str, int]]:
    """(actor name, job id, attempt) of every rank-0 runner actor alive in the platform's namespace."""
    return [(a["name"], parsed[0], parsed[1]) for a in ray.util.list_named_actors(all_namespaces=True)
            if a.get("namespace") == NAMESPACE and (parsed := runtime_env.parse_rank_runner_name(a["name"]))
            and parsed[2] == 0]


def find_gang(job_id: str, attempt: int, leader: Any) -> Gang:
    """The runners of an attempt from before a controller restart, found by their names."""
    others: dict[int, Any] = {}
    for a in ray.util.list_named_actors(all_namespaces=True):
        parsed = runtime_env.parse_rank_runner_name(a["name"]) if a.get("namespace") == NAMESPACE else None
        if parsed and parsed[:2] == (job_id, attempt) and parsed[2] > 0:
            try:
                others[parsed[2]] = ray.get_actor(a["name"], namespace=NAMESPACE)
            except ValueError:  # gone meanwhile: the gang's run finds that rank missing
                pass
    return Gang([leader, *(others[r] for r in sorted(others))])


def find_placement(name: str) -> Any:
    """The placement group of a runner from before a controller restart, if it has one."""
    try:
        return ray.util.get_placement_group(name)
    except ValueError:
        return None


def remove(gang: Gang, placement: Any) -> None:
    """The runner actors and their reserved resources go (their processes are ended before: the
    runners' terminate, or kill_orphaned_group)."""
    for actor in gang.actors:
        try:
            ray.kill(actor, no_restart=True)
        except Exception:
            pass
    if placement is not None:
        try:
            remove_placement_group(placement)
        except Exception:
            pass
