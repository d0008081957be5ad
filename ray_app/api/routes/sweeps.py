"""Hyperparameter sweeps: create, list, get, cancel (ray_app/sweeps: Ray Tune runs them, every
trial a job of the sweep's project).

A sweep is checked whole before anything is written: its base job as POST /v1/jobs would check
it (api/job_specs.py), its space (sweeps/space.py), and every value the space can give a field
put into the base job and checked again (each choice; both ends of a range), so no trial can be
a body the job API refuses. The sweep's Tune driver is started by the controller
(sweeps/supervisor.py), which also starts it again after a restart."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import ValidationError

from ray_app.api.access import User, Who, unprocessable
from ray_app.api.deps import Ctx
from ray_app.api.documented import CONFLICT, SWEEP_NOT_FOUND, TOO_LARGE, USER_ROUTE
from ray_app.api.job_specs import resolve_job
from ray_app.jobs.api_models import JobCreate
from ray_app.store import sweeps as store_sweeps
from ray_app.sweeps import space as spaces
from ray_app.sweeps.models import SweepCreate, SweepPage, SweepState, SweepView
from ray_app.teams.policy import Action

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"], dependencies=[User], responses=USER_ROUTE)


def _space_error(path: str, msg: str) -> HTTPException:
    return HTTPException(422, detail=[{"loc": ["body", "space", *([path] if path else [])], "msg": msg,
                                       "type": "value_error"}])


def check_space(body: SweepCreate) -> dict[str, spaces.Domain]:
    try:
        space = spaces.parse_space(body.space, body.search)
    except spaces.SpaceError as exc:
        raise _space_error(exc.path, exc.msg) from None
    base = body.job.model_dump(mode="json", exclude_unset=True)
    for path, value in spaces.corners(space):
        try:
            JobCreate.model_validate(spaces.apply(base, {path: value}))
        except ValidationError as exc:
            why = "; ".join(e["msg"] for e in exc.errors())
            raise _space_error(path, f"{value!r} is not a valid value here: {why}") from None
    if body.scheduler is not None and body.scheduler.grace_period >= body.job.epochs:
        raise unprocessable("scheduler.grace_period", f"the grace period ({body.scheduler.grace_period} epochs) "
                            f"must be shorter than the trials' epochs ({body.job.epochs})")
    return space


@router.post("", status_code=201, response_model=SweepView, responses=TOO_LARGE, summary="Start a sweep")
async def create_sweep(body: SweepCreate, ctx: Ctx, who: Who) -> dict[str, Any]:
    """Every trial is a job of the sweep's project: its base job with the values Tune chose."""
    new_project = await who.submit_to(body.project_id)
    space = check_space(body)
    job = await resolve_job(body.job.model_copy(update={"project_id": body.project_id}), ctx, who, where="job.")
    if new_project:
        await who.make_project(body.project_id)
    spec = body.model_dump(mode="json", exclude={"name", "project_id", "job"})
    spec.update(job=job, planned_trials=spaces.grid_size(space) if body.search == "grid" else body.num_trials)
    sweep_id = uuid.uuid4().hex[:16]
    await ctx.store.create_sweep({"id": sweep_id, "name": body.name, "project_id": body.project_id,
                                  "spec": spec, "created_by": who.user_id})
    who.note(f"sweep:{sweep_id}", body.project_id)
    ctx.nudge_controller(sweeps=True)
    return await ctx.read(store_sweeps.sweep_view, sweep_id)


@router.get("", response_model=SweepPage, summary="List sweeps, newest first")
async def list_sweeps(
    ctx: Ctx, who: Who, project_id: str | None = None, state: SweepState | None = None,
    cursor: Annotated[str | None, Query(pattern=r"^\d{1,15}$", description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> SweepPage:
    items, next_cursor = await ctx.read(store_sweeps.list_sweeps, project_id, state.value if state else None,
                                        int(cursor) if cursor else None, limit, who.visible_projects())
    return SweepPage.model_validate({"items": items,
                                     "next_cursor": str(next_cursor) if next_cursor is not None else None})


@router.get("/{sweep_id}", response_model=SweepView, responses=SWEEP_NOT_FOUND,
            summary="Get a sweep with its trials")
async def get_sweep(sweep_id: str, who: Who) -> dict[str, Any]:
    return await who.sweep(sweep_id)


@router.post("/{sweep_id}/cancel", response_model=SweepView, responses={**SWEEP_NOT_FOUND, **CONFLICT},
             summary="Cancel a sweep and every trial it runs (idempotent)")
async def cancel_sweep(sweep_id: str, ctx: Ctx, who: Who) -> dict[str, Any]:
    """Members cancel the sweeps they started; a project's admins cancel any."""
    await who.sweep(sweep_id, Action.CANCEL)
    await ctx.store.request_sweep_stop(sweep_id, SweepState.CANCELLED.value, None, by=who.user_id)
    ctx.nudge_controller(sweeps=True)
    return await ctx.read(store_sweeps.sweep_view, sweep_id)
