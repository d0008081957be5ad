"""The dataset API: open an upload (presigned multipart), complete it (validation starts), list,
get and delete datasets. Uploads go from the client straight to S3; the API hands out URLs,
records versions through the store (the single writer) and reads them by SQL."""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import ValidationError
from sdk.contract import dataset_version_key

from ray_app.api.context import AppContext
from ray_app.api.access import Caller, User, Who, unprocessable
from ray_app.api.deps import Ctx
from ray_app.api.documented import CONFLICT, DATASET_NOT_FOUND, TOO_LARGE, USER_ROUTE
from ray_app.datasets import uploads
from ray_app.datasets.models import (
    DATASET_ID_PATTERN,
    SHA256_PATTERN,
    VERSION_REF_PATTERN,
    DatasetPage,
    DatasetView,
    SamplePage,
    SampleView,
    UploadCreate,
    UploadView,
    VersionState,
    VersionView,
)
from ray_app.store import datasets as store_datasets
from ray_app.teams.policy import DEFAULT_PROJECT, Action

# a version still VALIDATING this long after its upload completed lost its task (a cluster
# restarted under it): the next open or complete of the same content starts validation again
VALIDATION_STALE_S = 600.0

log = logging.getLogger("ray_app.datasets")

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], dependencies=[User], responses=USER_ROUTE)

Row = dict[str, Any]


def _start_validation(ctx: AppContext, row: Row) -> None:
    from ray_app.datasets.validation import start_validation  # Ray: in the replica only

    start_validation(ctx.settings, row["dataset_id"], row["version"], row["key"])


def _revalidate_if_stale(ctx: AppContext, row: Row) -> None:
    completed = row.get("completed_at")
    if (row["state"] == VersionState.VALIDATING and completed is not None
            and (datetime.now(UTC) - completed).total_seconds() > VALIDATION_STALE_S):
        _start_validation(ctx, row)


def version_view(ctx: AppContext, row: Row) -> VersionView:
    return VersionView.model_validate({**row, "uri": ctx.storage.uri(row["key"])})


def dataset_view(ctx: AppContext, row: Row) -> DatasetView:
    return DatasetView.model_validate({**row, "versions": [version_view(ctx, v) for v in row["versions"]]})


async def _upload_view(ctx: AppContext, row: Row, created: bool) -> UploadView:
    """What the client needs to send the parts still missing (none once the upload is complete)."""
    view = UploadView(dataset_id=row["dataset_id"], version=row["version"], state=row["state"], created=created,
                      part_size=row["part_size"], parts_total=uploads.parts_total(row["size_bytes"], row["part_size"]))
    if row["state"] != VersionState.UPLOADING:
        return view
    done = await asyncio.to_thread(ctx.storage.parts_done, row["key"], row["upload_id"])
    if done is None:  # the storage forgot it: a fresh multipart upload for the same object
        upload_id = await asyncio.to_thread(ctx.storage.open_upload, row["key"])
        row = await ctx.store.dataset_upload_reopened(row["dataset_id"], row["version"], upload_id)
        done = {}
    view.parts_done = uploads.sized_parts(done, row["size_bytes"], row["part_size"])
    missing = [n for n in range(1, view.parts_total + 1) if n not in view.parts_done]
    view.urls = await asyncio.to_thread(ctx.storage.part_urls, row["key"], row["upload_id"], missing)
    view.expires_at = ctx.storage.expires_at()
    return view


@router.post("", status_code=201, response_model=UploadView,
             responses={**TOO_LARGE, **CONFLICT, 200: {"model": UploadView, "description": "content already "
                        "known: an unfinished upload (URLs for its missing parts) or an existing version"}},
             summary="Open an upload of a dataset archive (or find its content already uploaded)")
async def open_upload(body: UploadCreate, ctx: Ctx, who: Who, response: Response) -> UploadView:
    """201 with one presigned PUT URL per part for new content; 200 for content already known:
    an upload left unfinished (URLs for its missing parts only: it resumes), or a version that
    exists (nothing to send). PUT each part to its URL, then POST .../complete."""
    if body.size_bytes > ctx.settings.dataset_max_bytes:
        raise HTTPException(413, f"size_bytes {body.size_bytes} exceeds the platform's bound of "
                                 f"{ctx.settings.dataset_max_bytes} bytes (VTP_DATASET_MAX_BYTES)")
    project_id, new_project = await _upload_project(who, body)
    try:
        row = await ctx.read(store_datasets.find_version, body.dataset_id, body.sha256)
    except store_datasets.DatasetNotFound:
        row = None
    if row is None:
        key = dataset_version_key(body.dataset_id, body.sha256, body.filename)
        if new_project:
            await who.make_project(project_id)
        upload_id = await asyncio.to_thread(ctx.storage.open_upload, key)
        row, created = await ctx.store.open_dataset_version(body.dataset_id, body.description, {
            "version": body.sha256, "filename": body.filename, "size_bytes": body.size_bytes, "key": key,
            "upload_id": upload_id, "part_size": uploads.part_size_for(body.size_bytes, ctx.settings.upload_part_bytes)},
            project_id, who.user_id)
        if not created:  # the same content opened at the same moment: use that one
            await asyncio.to_thread(ctx.storage.abort_upload, key, upload_id)
    else:
        created = False
        if row["state"] == VersionState.UPLOADING and row["size_bytes"] != body.size_bytes:
            raise HTTPException(422, detail=[{"loc": ["body", "size_bytes"], "type": "value_error", "msg": (
                f"an upload of this content (sha256) is open with size_bytes {row['size_bytes']}")}])
    if not created:
        response.status_code = 200
        _revalidate_if_stale(ctx, row)
    return await _upload_view(ctx, row, created)


@router.post("/{dataset_id}/versions/{version}/complete", status_code=202, response_model=VersionView,
             responses={**DATASET_NOT_FOUND, **CONFLICT,
                        200: {"model": VersionView, "description": "completed before: the version as it is"}}, summary="Finish an upload; validation starts")
async def complete_upload(dataset_id: str, version: str, ctx: Ctx, who: Who, response: Response) -> VersionView:
    """202: the parts are joined and a validation task started. 409 while parts are missing
    (named). A version past uploading answers 200 as it is (completing twice is harmless)."""
    _check_ids(dataset_id, version)
    await who.dataset(dataset_id, Action.SUBMIT)
    row = await ctx.read(store_datasets.find_version, dataset_id, version)
    if row["version"] != version:
        raise store_datasets.DatasetNotFound(f"dataset {dataset_id} has no version {version}")
    if row["state"] != VersionState.UPLOADING:
        response.status_code = 200
        _revalidate_if_stale(ctx, row)
        return version_view(ctx, row)
    await asyncio.to_thread(ctx.storage.complete_upload, row["key"], row["upload_id"],
                            row["size_bytes"], row["part_size"])
    row = await ctx.store.dataset_upload_completed(dataset_id, version)
    _start_validation(ctx, row)
    return version_view(ctx, row)


@router.get("", response_model=DatasetPage, summary="List datasets by name, with their versions")
async def list_datasets(
    ctx: Ctx,
    who: Who,
    cursor: Annotated[str | None, Query(pattern=DATASET_ID_PATTERN, description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DatasetPage:
    items, next_cursor = await ctx.read(store_datasets.list_datasets, cursor, limit, who.visible_projects())
    return DatasetPage(items=[dataset_view(ctx, d) for d in items], next_cursor=next_cursor)


@router.get("/{dataset_id}", response_model=DatasetView, responses=DATASET_NOT_FOUND,
            summary="A dataset: its versions (newest first), each with its validation report")
async def get_dataset(dataset_id: str, ctx: Ctx, who: Who) -> DatasetView:
    _check_ids(dataset_id)
    await who.dataset(dataset_id)
    return dataset_view(ctx, await ctx.read(store_datasets.get_dataset, dataset_id))


@router.get("/{dataset_id}/versions/{version}", response_model=VersionView, responses=DATASET_NOT_FOUND,
            summary="One version (its hash or a unique prefix of at least 8 characters)")
async def get_version(dataset_id: str, version: str, ctx: Ctx, who: Who) -> VersionView:
    _check_ids(dataset_id, version, prefix=True)
    await who.dataset(dataset_id)
    return version_view(ctx, await ctx.read(store_datasets.find_version, dataset_id, version))


def _samples(ctx: AppContext, archive_key: str) -> list[SampleView]:
    """The version's samples.json (written by its validation), each thumbnail with a presigned
    URL; none when validation made none (a version validated before samples existed)."""
    try:
        index = ctx.storage.read_json(uploads.samples_prefix(archive_key) + uploads.SAMPLES_INDEX)
    except ValueError as exc:  # not JSON: as if there were none
        log.warning("samples of %s unreadable: %s", archive_key, exc)
        return []
    items = []
    for entry in index if isinstance(index, list) else []:
        try:
            items.append(SampleView.model_validate({**entry, "url": ctx.storage.view_url(str(entry["key"]))}))
        except (TypeError, KeyError, ValidationError) as exc:
            log.warning("a sample of %s left out: %s", archive_key, exc)
    return items


@router.get("/{dataset_id}/versions/{version}/samples", response_model=SamplePage,
            response_model_exclude_none=True, responses=DATASET_NOT_FOUND,
            summary="Up to 12 sample images of a version with their labels (thumbnails at presigned URLs)")
async def get_samples(dataset_id: str, version: str, ctx: Ctx, who: Who) -> SamplePage:
    """Images picked by validation (train split first, spread over the classes), each a JPEG
    thumbnail at most 256 px on its longest side, with its labels in the thumbnail's pixels:
    class_name and xyxy (and polygon) for boxes and masks, class_name alone for classification.
    Empty while the version is not validated, or when validation made none."""
    _check_ids(dataset_id, version, prefix=True)
    await who.dataset(dataset_id)
    row = await ctx.read(store_datasets.find_version, dataset_id, version)
    return SamplePage(items=await asyncio.to_thread(_samples, ctx, row["key"]))


@router.delete("/{dataset_id}", status_code=204, responses={**DATASET_NOT_FOUND, **CONFLICT},
               summary="Delete a dataset and its stored versions (409 while a queued or running job uses it)")
async def delete_dataset(dataset_id: str, ctx: Ctx, who: Who) -> Response:
    """A project's admins delete its datasets."""
    _check_ids(dataset_id)
    await who.dataset(dataset_id, Action.DELETE_DATASET)
    versions = await ctx.store.delete_dataset(dataset_id)

    def remove() -> None:
        for v in versions:
            if v.get("upload_id"):
                ctx.storage.abort_upload(v["key"], v["upload_id"])
            ctx.storage.delete(v["key"])
            for obj in ctx.storage.list(uploads.samples_prefix(v["key"])):
                ctx.storage.delete(obj["Key"])

    await asyncio.to_thread(remove)
    return Response(status_code=204)


async def _upload_project(who: Caller, body: UploadCreate) -> tuple[str, bool]:
    """The project an upload goes to, checked: a new version goes to its dataset's project (the
    caller must be a member there), a new dataset to the one named (or `default`). A name taken
    by a dataset of a project the caller is not in is refused (409) without naming that project.
    Returns (project, whether the platform admin's new project must be made first)."""
    existing = await who.ctx.read(store_datasets.dataset_row, body.dataset_id)
    if existing is None:
        project_id = body.project_id or DEFAULT_PROJECT
        return project_id, await who.submit_to(project_id)
    if not who.principal.sees(existing["project_id"]):
        raise HTTPException(409, detail=f"the dataset name {body.dataset_id} is taken; choose another")
    if body.project_id is not None and body.project_id != existing["project_id"]:
        raise unprocessable("project_id", f"dataset {body.dataset_id} belongs to project "
                                          f"{existing['project_id']}; a new version goes there")
    who.check_dataset(existing, Action.SUBMIT)
    return existing["project_id"], False


def _check_ids(dataset_id: str, version: str | None = None, prefix: bool = False) -> None:
    """Path parameters: a name the API could have created, a version that could exist (404, as
    for any name that does not)."""
    if not re.fullmatch(DATASET_ID_PATTERN, dataset_id):
        raise store_datasets.DatasetNotFound(f"dataset {dataset_id!r} not found")
    if version is not None and not re.fullmatch(VERSION_REF_PATTERN if prefix else SHA256_PATTERN, version):
        raise store_datasets.DatasetNotFound(f"dataset {dataset_id} has no version {version!r}")
