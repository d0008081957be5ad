"""The shared cluster's queue (ray_app/scheduling): the jobs waiting, in the order they are
offered, and the projects' use against their quotas and shares; a project's quota (platform
admins). The queue is the controller's last decision, asked of the controller itself."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from ray_app.api.access import User, Who
from ray_app.api.documented import PROJECT_NOT_FOUND, USER_ROUTE
from ray_app.api.routes.teams import project_view
from ray_app.scheduling.models import QueueView, QuotaSet
from ray_app.teams.models import ProjectView

router = APIRouter(tags=["queue"], dependencies=[User], responses=USER_ROUTE)


@router.get("/v1/queue", response_model=QueueView, responses={503: {"description": "no controller is running"}},
            summary="The jobs waiting, in order, and the projects' use against quota and share")
async def get_queue(who: Who, limit: Annotated[int, Query(ge=1, le=20_000, description=(
        "the first this many jobs of the queue (`total` says how many there are)"))] = 1000) -> dict[str, Any]:
    """Jobs and projects you can see (platform admins: all); positions are the queue's own."""
    snapshot = await who.ctx.controller_queue()
    if snapshot is None:
        raise HTTPException(503, detail="the controller is not running: no queue to show")
    jobs, projects = snapshot["jobs"], snapshot["projects"]
    visible = who.visible_projects()
    if visible is not None:
        seen = set(visible)
        jobs = [j for j in jobs if j["project_id"] in seen]
        projects = [p for p in projects if p["project_id"] in seen]
    return {**snapshot, "jobs": jobs[:limit], "projects": projects, "total": len(jobs)}


@router.put("/v1/projects/{project_id:path}/quota", response_model=ProjectView, responses=PROJECT_NOT_FOUND,
            summary="Set a project's quota, fair-share weight and preemptibility (platform admins)")
async def set_quota(project_id: str, body: QuotaSet, who: Who) -> ProjectView:
    """The fields given change, the others stay; null lifts a limit. Jobs over a new quota are
    not stopped: the queue holds the project's next ones until it is under it again."""
    who.note(f"quota:{project_id}", project_id)  # a refused call is audited with what it was for
    who.require_platform_admin()
    await who.project(project_id)
    who.note(f"quota:{project_id}", project_id)  # (the project's lookup noted itself)
    row = await who.ctx.store.set_quota(project_id, body.model_dump(include=body.model_fields_set))
    who.ctx.nudge_controller()
    return project_view(who, row)
