"""AsyncClient: Client's methods for asyncio (_client.py says what they do)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from ray_app.client import _calls as calls
from ray_app.client._calls import UNSET, Unset
from ray_app.client._config import ClientConfig
from ray_app.client._retry import RetryableStatus, async_retrying
from ray_app.client._uploads import (
    Archive,
    PartURLExpired,
    ProgressCallback,
    UploadResult,
    check_part_response,
    missing_parts,
    prepare,
)
from ray_app.datasets.models import (
    ArtifactPage,
    DatasetPage,
    DatasetView,
    UploadView,
    VersionState,
    VersionView,
)
from ray_app.jobs.export_models import ExportCreate, ExportPage, ExportView
from ray_app.jobs.api_models import EventPage, JobCreate, JobPage, JobView, LogPage, MetricPage, PredictResponse
from ray_app.scheduling.models import QueueView
from ray_app.sweeps.models import SweepCreate, SweepPage, SweepSummary, SweepView
from ray_app.teams.models import (
    AuditEntry,
    AuditPage,
    ProjectPage,
    ProjectView,
    RoleName,
    TokenCreated,
    TokenPage,
    TokenView,
    UserCreated,
    UserPage,
    UserView,
    WhoAmI,
)

from ray_app.client._base import (
    apages,
    UPLOAD_ROUNDS,
    _Base,
    _final,
    _finished,
    _parsed,
    _request_args,
    _start,
    _upload_body,
    _urls_refused,
    _validated,
    _export_done,
    _sweep_done,
)

T = TypeVar("T")


class AsyncClient(_Base):
    """The same methods as Client, for asyncio. Use with `async with`, or call aclose()."""

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0,
                 config: ClientConfig | None = None):
        super().__init__(url, token, timeout, config)
        self.http = httpx.AsyncClient(base_url=self.config.base_url, headers=self._headers,
                                      timeout=self.config.timeout)
        self.storage = httpx.AsyncClient(timeout=httpx.Timeout(self.config.timeout, read=300))

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.storage.aclose()

    async def send(self, call: calls.Call[T]) -> T:
        try:
            async for attempt in async_retrying(call.idempotent):
                with attempt:
                    response = await self.http.request(call.method, call.path, **_request_args(call))
                    return _parsed(call, response)
        except (httpx.TransportError, RetryableStatus) as exc:
            raise _final(exc, self.config.base_url) from None
        raise AssertionError("unreachable")

    # ------------------------------------------------------------ jobs
    async def submit(self, body: JobCreate | dict[str, Any]) -> JobView:
        return await self.send(calls.submit(body))

    async def get_job(self, job_id: str) -> JobView:
        return await self.send(calls.get_job(job_id))

    async def list_jobs(self, state: str | None = None, project_id: str | None = None,
                        framework: str | None = None, cursor: str | None = None,
                        limit: int | None = None, id_prefix: str | None = None,
                        sweep_id: str | None = None) -> JobPage:
        return await self.send(calls.list_jobs(state, project_id, framework, cursor, limit, id_prefix, sweep_id))

    async def cancel(self, job_id: str) -> JobView:
        return await self.send(calls.cancel(job_id))

    async def events(self, job_id: str, after: int = 0, limit: int | None = None) -> EventPage:
        return await self.send(calls.events(job_id, after, limit))

    async def logs(self, job_id: str, after: int = 0, limit: int | None = None, rank: int | None = None) -> LogPage:
        return await self.send(calls.logs(job_id, after, limit, rank))

    async def metrics(self, job_id: str) -> MetricPage:
        return await self.send(calls.metrics(job_id))

    async def predict(self, job_id: str, images: list[Path], conf: float = 0.25, top_k: int = 5) -> PredictResponse:
        return await self.send(calls.predict(job_id, images, conf, top_k))

    async def export(self, job_id: str, format: str, **options: Any) -> ExportView:
        return await self.send(calls.export(job_id, ExportCreate(format=format, **options)))

    async def get_export(self, job_id: str, export_id: str) -> ExportView:
        return await self.send(calls.get_export(job_id, export_id))

    async def list_exports(self, job_id: str) -> ExportPage:
        return await self.send(calls.list_exports(job_id))

    async def wait_export(self, job_id: str, export_id: str, timeout: float = 600.0,
                          interval: float = 1.0) -> ExportView:
        deadline = time.monotonic() + timeout
        while not _export_done(view := await self.get_export(job_id, export_id), deadline, timeout):
            await asyncio.sleep(interval)
        return view

    async def artifacts(self, job_id: str) -> ArtifactPage:
        return await self.send(calls.artifacts(job_id))

    async def artifact_url(self, job_id: str, name: str) -> str:
        return await self.send(calls.artifact_url(job_id, name))

    # ------------------------------------------------------------ sweeps
    async def create_sweep(self, body: SweepCreate | dict[str, Any]) -> SweepView:
        return await self.send(calls.create_sweep(body))

    async def get_sweep(self, sweep_id: str) -> SweepView:
        return await self.send(calls.get_sweep(sweep_id))

    async def list_sweeps(self, project_id: str | None = None, state: str | None = None,
                          cursor: str | None = None, limit: int | None = None) -> SweepPage:
        return await self.send(calls.list_sweeps(project_id, state, cursor, limit))

    def iter_sweeps(self, project_id: str | None = None,
                    state: str | None = None) -> AsyncIterator[SweepSummary]:
        return apages(lambda cursor: self.list_sweeps(project_id, state, cursor))

    async def cancel_sweep(self, sweep_id: str) -> SweepView:
        return await self.send(calls.cancel_sweep(sweep_id))

    async def wait_sweep(self, sweep_id: str, timeout: float = 3600.0, interval: float = 1.0) -> SweepView:
        deadline = time.monotonic() + timeout
        while not _sweep_done(view := await self.get_sweep(sweep_id), deadline, timeout):
            await asyncio.sleep(interval)
        return view

    # ------------------------------------------------------------ the queue and projects' quotas
    async def get_queue(self) -> QueueView:
        return await self.send(calls.get_queue())

    async def set_quota(self, project_id: str, *, max_gpus: float | None | Unset = UNSET,
                        max_cpus: float | None | Unset = UNSET, max_running_jobs: int | None | Unset = UNSET,
                        weight: float | Unset = UNSET, preemptible: bool | Unset = UNSET) -> ProjectView:
        return await self.send(calls.set_quota(project_id, max_gpus, max_cpus, max_running_jobs, weight,
                                               preemptible))

    # ------------------------------------------------------------ datasets
    async def list_datasets(self, cursor: str | None = None, limit: int | None = None) -> DatasetPage:
        return await self.send(calls.list_datasets(cursor, limit))

    def iter_datasets(self) -> AsyncIterator[DatasetView]:
        return apages(lambda cursor: self.list_datasets(cursor))

    async def get_dataset(self, dataset_id: str) -> DatasetView:
        return await self.send(calls.get_dataset(dataset_id))

    async def get_version(self, dataset_id: str, version: str) -> VersionView:
        return await self.send(calls.get_version(dataset_id, version))

    async def delete_dataset(self, dataset_id: str) -> None:
        await self.send(calls.delete_dataset(dataset_id))

    async def wait_version(self, dataset_id: str, version: str, timeout: float = 600.0,
                           interval: float = 0.5) -> VersionView:
        deadline = time.monotonic() + timeout
        while not _validated(view := await self.get_version(dataset_id, version), deadline, timeout):
            await asyncio.sleep(interval)
        return view

    async def upload_dataset(self, path: str | Path, dataset_id: str, description: str = "",
                             concurrency: int = 4, progress: ProgressCallback | None = None,
                             on_start: Any = None, project_id: str | None = None) -> UploadResult:
        archive = await asyncio.to_thread(prepare, path)
        try:
            body = _upload_body(archive, dataset_id, description, project_id)
            result: UploadResult | None = None
            gate = asyncio.Semaphore(max(1, concurrency))
            for _ in range(UPLOAD_ROUNDS):
                view = await self.send(calls.open_upload(body))
                result = result or _start(view, archive, on_start, progress)
                if view.state != VersionState.UPLOADING:
                    return result

                async def put(part: tuple[int, str], view: UploadView = view) -> int:
                    async with gate:
                        return await self._put_part(archive, view, part, progress)

                try:
                    sent = list(await asyncio.gather(*(put(p) for p in missing_parts(view))))
                except PartURLExpired:
                    continue
                return _finished(result, sent, await self.send(calls.complete_upload(dataset_id, view.version)))
            raise _urls_refused()
        finally:
            archive.cleanup()

    async def _put_part(self, archive: Archive, view: UploadView, part: tuple[int, str],
                        progress: ProgressCallback | None) -> int:
        number, url = part
        data = await asyncio.to_thread(archive.read_part, number, view.part_size)
        try:
            async for attempt in async_retrying(True):
                with attempt:
                    check_part_response(await self.storage.put(url, content=data))
        except (httpx.TransportError, RetryableStatus) as exc:
            raise _final(exc, "the storage") from None
        if progress:
            progress(len(data))
        return len(data)

    # ------------------------------------------------------------ teams: you, your tokens
    async def whoami(self) -> WhoAmI:
        return await self.send(calls.whoami())

    async def create_token(self, name: str, expires: str | None = None) -> TokenCreated:
        return await self.send(calls.create_token(name, expires))

    async def list_tokens(self) -> TokenPage:
        return await self.send(calls.list_tokens())

    async def revoke_token(self, token_id: str) -> TokenView:
        return await self.send(calls.revoke_token(token_id))

    # ------------------------------------------------------------ teams: users (platform admins)
    async def create_user(self, user_id: str, display_name: str = "", platform_admin: bool = False) -> UserCreated:
        return await self.send(calls.create_user(user_id, display_name, platform_admin))

    async def list_users(self) -> UserPage:
        return await self.send(calls.list_users())

    async def disable_user(self, user_id: str) -> UserView:
        return await self.send(calls.disable_user(user_id))

    async def enable_user(self, user_id: str) -> UserView:
        return await self.send(calls.enable_user(user_id))

    # ------------------------------------------------------------ teams: projects and members
    async def list_projects(self) -> ProjectPage:
        return await self.send(calls.list_projects())

    async def create_project(self, project_id: str, description: str = "") -> ProjectView:
        return await self.send(calls.create_project(project_id, description))

    async def get_project(self, project_id: str) -> ProjectView:
        return await self.send(calls.get_project(project_id))

    async def set_member(self, project_id: str, user_id: str, role: RoleName) -> ProjectView:
        return await self.send(calls.set_member(project_id, user_id, role))

    async def remove_member(self, project_id: str, user_id: str) -> ProjectView:
        return await self.send(calls.remove_member(project_id, user_id))

    # ------------------------------------------------------------ teams: the audit log (platform admins)
    async def audit(self, user_id: str | None = None, project_id: str | None = None, action: str | None = None,
                    resource: str | None = None, since: datetime | str | None = None, cursor: str | None = None,
                    limit: int | None = None) -> AuditPage:
        return await self.send(calls.audit(user_id, project_id, action, resource, since, cursor, limit))

    def iter_audit(self, user_id: str | None = None, project_id: str | None = None,
                   action: str | None = None, resource: str | None = None,
                   since: datetime | str | None = None) -> AsyncIterator[AuditEntry]:
        return apages(lambda cursor: self.audit(user_id, project_id, action, resource, since, cursor))
