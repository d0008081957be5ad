"""POST /v1/jobs/{id}/predict: inference with a finished job's checkpoint, on the trainer's model
server (a Ray Serve application with multiplexed models: ray_app/serving)."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, UploadFile
from ray.exceptions import RayError
from ray.serve.exceptions import RayServeException

from ray_app.api.deps import Ctx, User
from ray_app.api.documented import NOT_FOUND, TOO_LARGE, UNAUTHORIZED, ErrorBody
from ray_app.jobs.api_models import PredictResponse
from ray_app.runtime.registry import UnknownTrainer
from ray_app.serving import apps

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[User], responses=UNAUTHORIZED)
log = logging.getLogger("ray_app.api")


@router.post("/{job_id}/predict", response_model=PredictResponse,
             responses={**NOT_FOUND, 409: {"description": "the job cannot serve predictions yet", "model": ErrorBody},
                        **TOO_LARGE, 502: {"description": "the prediction failed on the cluster", "model": ErrorBody}},
             summary="Run the job's best checkpoint on uploaded images")
async def predict(
    job_id: str,
    ctx: Ctx,
    files: Annotated[list[UploadFile], File(description="one or more images")],
    conf: Annotated[float, Form(ge=0, le=1, description="detection confidence threshold")] = 0.25,
    top_k: Annotated[int, Form(ge=1, le=100, description="classes per image (classification)")] = 5,
) -> PredictResponse:
    job = await ctx.reads.get_job(job_id)
    images = [(f.filename or f"image-{i}", await f.read()) for i, f in enumerate(files)]
    empty = [name for name, data in images if not data]
    if empty:
        raise HTTPException(422, detail=[{"loc": ["body", "files"], "msg": f"empty file(s): {empty}",
                                          "type": "value_error"}])
    try:
        manifest = ctx.registry.get(job.framework)
        model = apps.model_id(manifest, job)
    except (apps.PredictUnavailable, UnknownTrainer) as exc:
        raise HTTPException(409, detail=str(exc)) from None
    try:
        server = await asyncio.to_thread(apps.model_server, ctx.settings, manifest)
        result = await server.options(multiplexed_model_id=model).predict.remote(
            images, {"conf": conf, "top_k": top_k})
    except (RayError, RayServeException) as exc:
        log.error("[TRACE:%s] prediction for job %s failed: %s", job.trace_id, job_id, exc)
        raise HTTPException(502, detail=f"prediction failed: {type(exc).__name__}") from None
    return PredictResponse(job_id=job_id, **result)
