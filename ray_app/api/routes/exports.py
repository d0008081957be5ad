"""A finished job's model exported to ONNX, TorchScript... by its trainer (ray_app/serving/exports.py):
POST /v1/jobs/{id}/exports starts one, GET lists them or reads one; the files are the job's
artifacts (GET /v1/jobs/{id}/artifacts/exports/{export id}/<file>)."""

from __future__ import annotations

import asyncio
import logging
import uuid

from fastapi import APIRouter, HTTPException

from ray_app.api.access import User, Who
from ray_app.api.deps import Ctx
from ray_app.api.documented import NOT_FOUND, USER_ROUTE, ErrorBody, Responses
from ray_app.jobs.export_models import ExportCreate, ExportPage, ExportView
from ray_app.jobs.states import JobState
from ray_app.runtime.registry import UnknownTrainer
from ray_app.serving import apps
from ray_app.teams.policy import Action

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[User], responses=USER_ROUTE)
log = logging.getLogger("ray_app.api")

EXPORT_NOT_FOUND: Responses = {404: {"description": "unknown job or export", "model": ErrorBody}}


@router.post("/{job_id}/exports", status_code=202, response_model=ExportView,
             responses={**NOT_FOUND, 409: {"description": "the job cannot be exported (not SUCCEEDED, no "
                                           "checkpoint, or its trainer has no export entrypoint)", "model": ErrorBody}},
             summary="Export the job's best checkpoint to another format (ONNX, TorchScript...)")
async def create_export(job_id: str, body: ExportCreate, ctx: Ctx, who: Who) -> ExportView:
    job = await who.job(job_id, Action.EXPORT)
    try:
        manifest = ctx.registry.get(job.framework)
    except UnknownTrainer as exc:
        raise HTTPException(409, detail=str(exc)) from None
    if not manifest.entrypoints.export:
        raise HTTPException(409, detail=f"trainer {manifest.name!r} has no export entrypoint")
    if body.format not in manifest.export_formats:
        supported = ", ".join(manifest.export_formats) or "none"
        raise HTTPException(422, detail=[{"loc": ["body", "format"], "type": "value_error",
                                          "msg": f"trainer {manifest.name!r} cannot export {body.format!r}; "
                                                 f"supported: {supported}"}])
    if job.state is not JobState.SUCCEEDED:
        raise HTTPException(409, detail=f"job {job_id} is {job.state.value}; exports need a SUCCEEDED job")
    try:
        checkpoint = apps.checkpoint_of(job)
    except apps.PredictUnavailable as exc:
        raise HTTPException(409, detail=str(exc)) from None
    options = {"image_size": body.image_size or job.image_size, "half": body.half, "dynamic": body.dynamic}
    export_id = uuid.uuid4().hex[:12]
    row = await ctx.store.export_created(job_id, export_id, body.format, options)
    try:
        from ray_app.serving.exports import start_export  # Ray: in the replica only

        await asyncio.to_thread(start_export, ctx.settings, manifest, job_id, export_id, checkpoint,
                                body.format, options)
    except Exception as exc:  # the trainer's environment could not be prepared: the export failed
        log.exception("[TRACE:%s] export %s of job %s not started", job.trace_id, export_id, job_id)
        row = await ctx.store.export_state(job_id, export_id, "failed",
                                           error=f"not started: {type(exc).__name__}: {exc}"[:4000])
    return ExportView.model_validate(row)


@router.get("/{job_id}/exports", response_model=ExportPage, responses=NOT_FOUND,
            summary="The job's exports, newest first")
async def list_exports(job_id: str, ctx: Ctx, who: Who) -> ExportPage:
    await who.job(job_id)
    return ExportPage(items=[ExportView.model_validate(r) for r in await ctx.reads.exports(job_id)])


@router.get("/{job_id}/exports/{export_id}", response_model=ExportView, responses=EXPORT_NOT_FOUND,
            summary="One export: its state and, once it succeeded, its files")
async def get_export(job_id: str, export_id: str, ctx: Ctx, who: Who) -> ExportView:
    await who.job(job_id)
    return ExportView.model_validate(await ctx.reads.export(job_id, export_id))
