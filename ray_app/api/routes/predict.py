"""POST /v1/jobs/{id}/predict: inference with a finished job's checkpoint, on the trainer's model
server (a Ray Serve application with multiplexed models: ray_app/serving)."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, UploadFile
from ray.exceptions import RayError, RayTaskError
from ray.serve.exceptions import RayServeException

from ray_app.api.access import User, Who
from ray_app.api.deps import Ctx
from ray_app.api.documented import NOT_FOUND, TOO_LARGE, USER_ROUTE, ErrorBody
from ray_app.jobs.api_models import PredictResponse
from ray_app.runtime.registry import UnknownTrainer
from ray_app.serving import apps
from ray_app.serving.images import ACCEPTED, upload_problems
from ray_app.teams.policy import Action

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[User], responses=USER_ROUTE)
log = logging.getLogger("ray_app.api")


@router.post("/{job_id}/predict", response_model=PredictResponse,
             responses={**NOT_FOUND, 409: {"description": "the job cannot serve predictions yet", "model": ErrorBody},
                        **TOO_LARGE,
                        500: {"description": "the job's model failed on the images (the model server's log, "
                                             "under the trace id named, has the error)", "model": ErrorBody},
                        503: {"description": "the model server is not available now; try again", "model": ErrorBody}},
             summary="Run the job's best checkpoint on uploaded images",
             description=f"Every file must be an image ({ACCEPTED}): each is decoded by the platform before "
                         "any model sees it, and a file that is not one is refused (422, naming it and why).")
async def predict(
    job_id: str,
    ctx: Ctx,
    who: Who,
    files: Annotated[list[UploadFile], File(description=f"one or more images ({ACCEPTED})")],
    conf: Annotated[float, Form(ge=0, le=1, description="detection confidence threshold")] = 0.25,
    top_k: Annotated[int, Form(ge=1, le=100, description="classes per image (classification)")] = 5,
) -> PredictResponse:
    job = await who.job(job_id, Action.PREDICT)
    images = [(f.filename or f"image-{i}", await f.read()) for i, f in enumerate(files)]
    # before any model is touched: what reaches a model server is an image, never a name or a path
    problems = await asyncio.to_thread(upload_problems, images)
    if problems:
        raise HTTPException(422, detail=[{"loc": ["body", "files", p.index], "msg": p.message, "type": "value_error"}
                                         for p in problems])
    try:
        manifest = ctx.registry.get(job.framework)
        model = apps.model_id(manifest, job)
    except (apps.PredictUnavailable, UnknownTrainer) as exc:
        raise HTTPException(409, detail=str(exc)) from None
    try:
        server = await asyncio.to_thread(apps.model_server, ctx.settings, manifest)
        result = await server.options(multiplexed_model_id=model).predict.remote(
            images, {"conf": conf, "top_k": top_k})
    except RayTaskError as exc:
        # the trainer's own code raised (loading the checkpoint or predicting): sent again, it
        # would fail the same way, so not a status clients retry
        log.error("[TRACE:%s] prediction for job %s failed: %s", job.trace_id, job_id, exc)
        raise HTTPException(500, detail=f"the model of job {job_id} failed on these images in the "
                                        f"{job.framework} model server (trace {job.trace_id} in its log)") from None
    except (RayError, RayServeException) as exc:
        log.error("[TRACE:%s] model server for job %s unavailable: %s", job.trace_id, job_id, exc)
        raise HTTPException(503, detail=f"the {job.framework} model server for job {job_id} is not available "
                                        "now; try again") from None
    return PredictResponse(job_id=job_id, **result)
