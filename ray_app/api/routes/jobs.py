"""The job API for users: create, list, get, cancel, and the job's histories.

Writes go to the JobStore actor (ctx.store); reads are SQL on the replica's own engine (ctx.reads,
store/reads.py), so they never queue behind, or delay, the single writer."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from ray_app.api.access import User, Who
from ray_app.api.deps import Ctx
from ray_app.api.job_specs import resolve_job
from ray_app.api.documented import CONFLICT, NOT_FOUND, TOO_LARGE, USER_ROUTE
from ray_app.jobs.api_models import (
    EventPage,
    EventView,
    JobCreate,
    JobPage,
    JobView,
    LogLine,
    LogPage,
    MetricPage,
    MetricView,
)
from ray_app.jobs.states import JobState
from ray_app.jobs.types import MAX_SEQ
from ray_app.teams.policy import Action

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[User], responses=USER_ROUTE)


@router.post("", status_code=201, response_model=JobView, responses=TOO_LARGE, summary="Create a training job")
async def create_job(body: JobCreate, ctx: Ctx, who: Who) -> JobView:
    new_project = await who.submit_to(body.project_id)
    spec = await resolve_job(body, ctx, who)
    if new_project:
        await who.make_project(body.project_id)
    job = await ctx.store.create_job(spec, uuid.uuid4().hex[:16])
    who.note(f"job:{job.id}", job.project_id)
    ctx.nudge_controller()
    return job


@router.get("", response_model=JobPage, summary="List jobs, newest first")
async def list_jobs(
    ctx: Ctx,
    who: Who,
    state: JobState | None = None,
    project_id: str | None = None,
    framework: str | None = None,
    cursor: Annotated[str | None, Query(pattern=r"^\d{1,15}$", description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    id_prefix: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,64}$",
                                           description="only the jobs whose id starts with this")] = None,
    sweep_id: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,64}$",
                                          description="only this sweep's trials")] = None,
) -> JobPage:
    items, next_cursor = await ctx.reads.list_jobs(state, project_id, framework, int(cursor) if cursor else None,
                                                   limit, id_prefix, who.visible_projects(), sweep_id)
    return JobPage(items=list(items),
                   next_cursor=str(next_cursor) if next_cursor is not None else None)


@router.get("/{job_id}", response_model=JobView, responses=NOT_FOUND, summary="Get a job")
async def get_job(job_id: str, who: Who) -> JobView:
    return await who.job(job_id)


@router.post("/{job_id}/cancel", response_model=JobView, responses={**NOT_FOUND, **CONFLICT, **TOO_LARGE},
             summary="Request cancellation (idempotent)")
async def cancel_job(job_id: str, ctx: Ctx, who: Who) -> JobView:
    """Members cancel the jobs they submitted; a project's admins cancel any of its jobs."""
    await who.job(job_id, Action.CANCEL)
    job = await ctx.store.request_cancel(job_id, by=who.user_id)
    ctx.nudge_controller()
    return job


@router.get("/{job_id}/events", response_model=EventPage, responses=NOT_FOUND, summary="The job's events, in order")
async def job_events(
    job_id: str, ctx: Ctx, who: Who, after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> EventPage:
    await who.job(job_id)
    items = await ctx.reads.events(job_id, after, limit)
    return EventPage(items=[EventView.model_validate(e) for e in items],
                     next_after=items[-1]["seq"] if items else None)


@router.get("/{job_id}/metrics", response_model=MetricPage, responses=NOT_FOUND, summary="Metric history per epoch")
async def job_metrics(job_id: str, ctx: Ctx, who: Who) -> MetricPage:
    await who.job(job_id)
    items = await ctx.reads.metrics(job_id)
    return MetricPage(items=[MetricView.model_validate(m) for m in items])


@router.get("/{job_id}/logs", response_model=LogPage, responses=NOT_FOUND, summary="The trainer's output lines")
async def job_logs(
    job_id: str, ctx: Ctx, who: Who, after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
    rank: Annotated[int | None, Query(ge=0, le=10_000, description="only the lines of this rank's process "
                                      "(and its runner's); next_after still moves past the others")] = None,
) -> LogPage:
    await who.job(job_id)
    items = await ctx.reads.logs(job_id, after, limit)
    shown = items if rank is None else [line for line in items if (line.get("rank") or 0) == rank]
    return LogPage(items=[LogLine.model_validate(line) for line in shown],
                   next_after=items[-1]["seq"] if items else None)
