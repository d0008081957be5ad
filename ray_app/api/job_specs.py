"""A job body made into the spec the store records: its trainer found, its dataset version chosen,
its resources filled from the trainer's defaults and checked (every GPU used, jobs/ranks.py).

One place for POST /v1/jobs and POST /v1/sweeps (whose base job every trial starts from): a body
either route accepts is a job the platform can run. `where` prefixes the field a 422 names
(`job.` for a sweep's base job)."""

from __future__ import annotations

from typing import Any

from ray_app.api.access import Caller, unprocessable
from ray_app.api.context import AppContext
from ray_app.jobs import ranks
from ray_app.jobs.api_models import JobCreate
from ray_app.runtime.registry import UnknownTrainer
from ray_app.store import datasets as store_datasets


async def resolve_job(body: JobCreate, ctx: AppContext, who: Caller, where: str = "") -> dict[str, Any]:
    try:
        manifest = ctx.resolve_trainer(body.framework, body.task_type.value, body.model_name)
    except UnknownTrainer as exc:
        raise unprocessable(f"{where}framework", str(exc)) from None
    spec = body.model_dump(mode="json")
    spec["created_by"] = who.user_id
    dataset = await ctx.read(store_datasets.dataset_row, body.dataset_id)
    if dataset is not None and not who.principal.sees(dataset["project_id"]):
        # a registered dataset of a project the caller is not in: as if it did not exist, and
        # never trained on by its place in S3 either
        raise unprocessable(f"{where}dataset_id", f"dataset {body.dataset_id} not found")
    try:  # a registered dataset: the version named, or its newest valid one; refused when unusable
        version = await ctx.read(store_datasets.version_for_job, body.dataset_id, body.dataset_version)
    except store_datasets.DatasetUnusable as exc:
        raise unprocessable(f"{where}dataset_version" if body.dataset_version else f"{where}dataset_id",
                            exc.detail) from None
    if version is not None:
        spec["dataset_version"] = version["version"]
        spec["dataset_uri"] = ctx.storage.uri(version["key"])
    if body.num_cpus is None:
        spec["num_cpus"] = manifest.resources.num_cpus
    if "num_gpus" not in body.model_fields_set:
        spec["num_gpus"] = manifest.resources.num_gpus
    if body.memory_mb is None:
        spec["memory_mb"] = manifest.resources.memory_mb
    try:  # every GPU it reserves used, as many workers as its trainer runs (jobs/ranks.py)
        ranks.layout(manifest.name, manifest.distributed, body.workers, spec["num_gpus"], spec["num_cpus"],
                     spec["memory_mb"], body.placement_strategy)
    except ranks.LayoutError as exc:
        raise unprocessable(f"{where}{exc.field}", str(exc)) from None
    return spec
