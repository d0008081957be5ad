"""Liveness and the trainer registry."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ray_app import __version__

from ray_app.api.access import User
from ray_app.api.deps import Ctx
from ray_app.api.documented import UNAUTHORIZED
from ray_app.config import Settings
from ray_app.runtime.registry import TrainerManifest

router = APIRouter(tags=["system"])


@router.get("/healthz", summary="Liveness of the API and its dependencies",
            responses={503: {"description": "a dependency (the job store) is unavailable"}})
async def healthz(ctx: Ctx) -> JSONResponse:
    checks: dict[str, str] = {"api": "ok"}
    try:
        await asyncio.wait_for(ctx.store.ping(), timeout=5)
        checks["job_store"] = "ok"
    except Exception as exc:  # report, never raise: this route exists to say what is wrong
        checks["job_store"] = f"unavailable: {type(exc).__name__}"
    if ctx.registry.problems:
        checks["trainers"] = f"{len(ctx.registry.problems)} manifest(s) could not be loaded"
    healthy = checks["job_store"] == "ok"
    return JSONResponse(status_code=200 if healthy else 503,
                        content={"status": "ok" if healthy else "degraded", "checks": checks})


@router.get("/v1/trainers", dependencies=[User], response_model=list[TrainerManifest], responses=UNAUTHORIZED,
            summary="Registered trainers with their tasks, models and default resources")
async def trainers(ctx: Ctx) -> list[TrainerManifest]:
    return list(ctx.registry.trainers.values())


class PlatformInfo(BaseModel):
    version: str
    mlflow_ui_url: str | None = Field(description="the MLflow UI, for links to a job's run (`#/runs/<id>`)")


def mlflow_ui_url(settings: Settings) -> str | None:
    url = settings.mlflow_ui_url or settings.mlflow_tracking_uri
    return url.rstrip("/") if url and url.startswith(("http://", "https://")) else None


@router.get("/v1/info", dependencies=[User], response_model=PlatformInfo, responses=UNAUTHORIZED,
            summary="The platform's version and the addresses its clients link to")
async def info(ctx: Ctx) -> PlatformInfo:
    return PlatformInfo(version=__version__, mlflow_ui_url=mlflow_ui_url(ctx.settings))
