"""A job's files for users: its checkpoints and artifacts in S3, listed and downloaded through
the API with the API token alone (a download is a redirect to a short-lived presigned URL)."""

from __future__ import annotations

import asyncio
from typing import Any

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, RedirectResponse
from sdk.contract import artifacts_prefix, checkpoints_prefix

from ray_app.api.context import AppContext
from ray_app.api.access import User, Who
from ray_app.api.deps import Ctx
from ray_app.api.documented import NOT_FOUND, USER_ROUTE
from ray_app.datasets.models import ArtifactPage, ArtifactView
from ray_app.jobs.errors import JobNotFound

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[User], responses=USER_ROUTE)


def _listing(ctx: AppContext, job_id: str) -> list[tuple[ArtifactView, str]]:
    """(view, key) of every file of the job: checkpoints first; an artifact whose name a checkpoint
    already has is named by its folder too (artifacts/...)."""
    out: list[tuple[ArtifactView, str]] = []
    names: set[str] = set()
    for kind, prefix in (("checkpoint", checkpoints_prefix(job_id)), ("artifact", artifacts_prefix(job_id))):
        for obj in ctx.storage.list(prefix):
            name = obj["Key"][len(prefix):]
            if name in names:
                name = f"artifacts/{name}"
            names.add(name)
            out.append((ArtifactView(name=name, kind=kind, size_bytes=int(obj.get("Size", 0)),  # type: ignore[arg-type]
                                     last_modified=obj.get("LastModified"), uri=ctx.storage.uri(obj["Key"])),
                        obj["Key"]))
    return out


@router.get("/{job_id}/artifacts", response_model=ArtifactPage, responses=NOT_FOUND,
            summary="The job's checkpoints, plots and files, with sizes")
async def list_artifacts(job_id: str, ctx: Ctx, who: Who) -> ArtifactPage:
    await who.job(job_id)  # 404 for an unknown job, or one the caller may not see
    listing = await asyncio.to_thread(_listing, ctx, job_id)
    return ArtifactPage(items=[view for view, _ in listing])


@router.get("/{job_id}/artifacts/{name:path}", status_code=307, response_class=RedirectResponse,
            responses={**NOT_FOUND, 307: {"description": "Location: a presigned URL of the file"},
                       200: {"description": "with redirect=false: {\"url\": the presigned URL}"}},
            summary="Download one file: a redirect to a short-lived presigned URL")
async def download_artifact(
    job_id: str, name: str, ctx: Ctx, who: Who,
    redirect: Annotated[bool, Query(description="false: answer the URL as JSON instead (a browser "
                                    "cannot follow a redirect to another origin with its token)")] = True,
) -> Any:
    await who.job(job_id)
    listing = await asyncio.to_thread(_listing, ctx, job_id)
    key = next((k for view, k in listing if view.name == name), None)
    if key is None:
        raise JobNotFound(f"job {job_id} has no artifact {name!r}")
    url = await asyncio.to_thread(ctx.storage.download_url, key, name.rsplit("/", 1)[-1])
    if not redirect:
        return JSONResponse({"url": url, "expires_in": ctx.settings.presign_ttl_s})
    return RedirectResponse(url, status_code=307)
