"""Client and AsyncClient: the same methods, one blocking and one for asyncio. Each method sends
one call of _calls.py; uploads and downloads add the transfers to and from S3's presigned URLs,
which get no API token (it must not leave for another host)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx

from ray_app.client import _calls as calls
from ray_app.client._config import ClientConfig
from ray_app.client._errors import APIError, TransportError
from ray_app.client._retry import RETRY_STATUSES, RetryableStatus, async_retrying, retrying
from ray_app.client._stream import StreamMessage, parse
from ray_app.client._uploads import (
    Archive,
    PartURLExpired,
    ProgressCallback,
    UploadProgress,
    UploadResult,
    check_part_response,
    missing_parts,
    prepare,
)
from ray_app.datasets.models import (
    ArtifactPage,
    DatasetPage,
    DatasetView,
    UploadCreate,
    UploadView,
    VersionState,
    VersionView,
)
from ray_app.jobs.api_models import EventPage, JobCreate, JobPage, JobView, LogPage, MetricPage, PredictResponse

T = TypeVar("T")
UPLOAD_ROUNDS = 3  # opens of one upload: the first, and fresh URLs after expired ones
DOWNLOAD_CHUNK = 1 << 20
STREAM_RECONNECTS = 5  # in a row, without a message between
STREAM_READ_S = 60.0  # the server pings every 15 s
FINAL_VERSION_STATES = (VersionState.VALID, VersionState.INVALID)


def _detail(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    return body.get("detail", body) if isinstance(body, dict) else body


def _parsed(call: calls.Call[T], response: httpx.Response) -> T:
    if response.status_code in RETRY_STATUSES:
        raise RetryableStatus(response)
    if response.status_code >= 400:
        raise APIError(response.status_code, _detail(response))
    return call.parse(response)


def _request_args(call: calls.Call[Any]) -> dict[str, Any]:
    args: dict[str, Any] = {"params": call.params, "json": call.json, "files": call.files, "data": call.data,
                            "follow_redirects": call.follow_redirects}
    if call.timeout is not None:
        args["timeout"] = call.timeout
    return {k: v for k, v in args.items() if v is not None}


def _final(exc: BaseException, where: str) -> APIError:
    if isinstance(exc, RetryableStatus):
        return APIError(exc.response.status_code, _detail(exc.response))
    return TransportError(f"cannot reach {where}: {type(exc).__name__}: {exc}")


def _upload_body(archive: Archive, dataset_id: str, description: str) -> UploadCreate:
    return UploadCreate(dataset_id=dataset_id, filename=archive.filename, size_bytes=archive.size,
                        sha256=archive.sha256, description=description)


class _Base:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0,
                 config: ClientConfig | None = None):
        self.config = config or ClientConfig.resolve(url, token, timeout)
        self._headers = {"Authorization": f"Bearer {self.config.token}"} if self.config.token else {}

    @classmethod
    def from_env(cls, **kwargs: Any) -> Any:
        """VTP_API_URL and VTP_API_TOKEN (or the local platform's, on its own machine)."""
        return cls(**kwargs)


class Client(_Base):
    """Blocking client. Use as a context manager, or call close()."""

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0,
                 config: ClientConfig | None = None):
        super().__init__(url, token, timeout, config)
        self.http = httpx.Client(base_url=self.config.base_url, headers=self._headers, timeout=self.config.timeout)
        self.storage = httpx.Client(timeout=httpx.Timeout(self.config.timeout, read=300))  # presigned URLs: no token

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()
        self.storage.close()

    def send(self, call: calls.Call[T]) -> T:
        try:
            for attempt in retrying(call.idempotent):
                with attempt:
                    response = self.http.request(call.method, call.path, **_request_args(call))
                    return _parsed(call, response)
        except (httpx.TransportError, RetryableStatus) as exc:
            raise _final(exc, self.config.base_url) from None
        raise AssertionError("unreachable")

    # ------------------------------------------------------------ jobs
    def submit(self, body: JobCreate | dict[str, Any]) -> JobView:
        return self.send(calls.submit(body))

    def get_job(self, job_id: str) -> JobView:
        return self.send(calls.get_job(job_id))

    def list_jobs(self, state: str | None = None, project_id: str | None = None, framework: str | None = None,
                  cursor: str | None = None, limit: int | None = None) -> JobPage:
        return self.send(calls.list_jobs(state, project_id, framework, cursor, limit))

    def cancel(self, job_id: str) -> JobView:
        return self.send(calls.cancel(job_id))

    def events(self, job_id: str, after: int = 0, limit: int | None = None) -> EventPage:
        return self.send(calls.events(job_id, after, limit))

    def logs(self, job_id: str, after: int = 0, limit: int | None = None) -> LogPage:
        return self.send(calls.logs(job_id, after, limit))

    def metrics(self, job_id: str) -> MetricPage:
        return self.send(calls.metrics(job_id))

    def predict(self, job_id: str, images: list[Path], conf: float = 0.25, top_k: int = 5) -> PredictResponse:
        return self.send(calls.predict(job_id, images, conf, top_k))

    def artifacts(self, job_id: str) -> ArtifactPage:
        return self.send(calls.artifacts(job_id))

    def stream(self, job_id: str, events_after: int = 0, logs_after: int = 0, events: bool = True,
               logs: bool = True, reconnects: int = STREAM_RECONNECTS) -> Iterator[StreamMessage]:
        """The job's live messages (job, event, log; `end` last) until the job is final and its
        output complete. A dropped connection is resumed where it was (Last-Event-ID)."""
        last_id: str | None = None
        failures = 0
        params = {"events_after": events_after, "logs_after": logs_after, "events": events, "logs": logs}
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with self.http.stream("GET", f"/v1/jobs/{calls._id(job_id)}/stream", params=params,
                                      headers=headers, timeout=httpx.Timeout(self.config.timeout, read=STREAM_READ_S)) as r:
                    if r.status_code >= 400:
                        r.read()
                        raise APIError(r.status_code, _detail(r))
                    for message in parse(r.iter_lines()):
                        failures, last_id = 0, message.id or last_id
                        yield message
                        if message.kind == "end":
                            return
            except httpx.TransportError as exc:
                failures += 1
                if failures > reconnects:
                    raise _final(exc, self.config.base_url) from None
                time.sleep(min(5.0, 0.5 * failures))

    def download_artifact(self, job_id: str, name: str, dest: str | Path,
                          progress: ProgressCallback | None = None) -> Path:
        """Save one of the job's files to `dest` (a file, or a folder to put it in)."""
        url = self.send(calls.artifact_url(job_id, name))
        target = _target(Path(dest), name)
        partial = target.with_name(target.name + ".part")
        try:
            for attempt in retrying(True):
                with attempt, self.storage.stream("GET", url) as response:
                    if response.status_code >= 400:
                        response.read()
                        check_part_response(response)
                    with open(partial, "wb") as out:
                        for chunk in response.iter_bytes(DOWNLOAD_CHUNK):
                            out.write(chunk)
                            if progress:
                                progress(len(chunk))
        except (httpx.TransportError, RetryableStatus) as exc:
            partial.unlink(missing_ok=True)
            raise _final(exc, "the storage") from None
        except PartURLExpired as exc:
            partial.unlink(missing_ok=True)
            raise APIError(403, f"the storage refused the download URL: {exc}") from None
        partial.replace(target)
        return target

    # ------------------------------------------------------------ datasets
    def list_datasets(self, cursor: str | None = None, limit: int | None = None) -> DatasetPage:
        return self.send(calls.list_datasets(cursor, limit))

    def iter_datasets(self) -> Iterator[DatasetView]:
        cursor = None
        while True:
            page = self.list_datasets(cursor)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def get_dataset(self, dataset_id: str) -> DatasetView:
        return self.send(calls.get_dataset(dataset_id))

    def get_version(self, dataset_id: str, version: str) -> VersionView:
        return self.send(calls.get_version(dataset_id, version))

    def delete_dataset(self, dataset_id: str) -> None:
        self.send(calls.delete_dataset(dataset_id))

    def wait_version(self, dataset_id: str, version: str, timeout: float = 600.0,
                     interval: float = 0.5) -> VersionView:
        """The version once validated (valid or invalid)."""
        deadline = time.monotonic() + timeout
        while not _validated(view := self.get_version(dataset_id, version), deadline, timeout):
            time.sleep(interval)
        return view

    def upload_dataset(self, path: str | Path, dataset_id: str, description: str = "", concurrency: int = 4,
                       progress: ProgressCallback | None = None,
                       on_start: Any = None) -> UploadResult:
        """Upload a folder or archive as a version of `dataset_id`: parts in parallel straight to
        storage, each retried; an interrupted upload of the same content resumes. Returns once
        the upload is complete (validation then runs on the platform: see wait_version)."""
        archive = prepare(path)
        try:
            body = _upload_body(archive, dataset_id, description)
            result: UploadResult | None = None
            for _ in range(UPLOAD_ROUNDS):
                view = self.send(calls.open_upload(body))
                result = result or _start(view, archive, on_start, progress)
                if view.state != VersionState.UPLOADING:
                    return result
                try:
                    sent = self.send_parts(archive, view, concurrency, progress)
                except PartURLExpired:
                    continue  # fresh URLs for the parts still missing
                return _finished(result, sent, self.send(calls.complete_upload(dataset_id, view.version)))
            raise _urls_refused()
        finally:
            archive.cleanup()

    def send_parts(self, archive: Archive, view: UploadView, concurrency: int = 4,
                   progress: ProgressCallback | None = None) -> list[int]:
        """PUT the parts `view` has URLs for, `concurrency` at a time; their sizes."""
        with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="vtp-upload") as pool:
            return list(pool.map(lambda part: self._put_part(archive, view, part, progress), missing_parts(view)))

    def _put_part(self, archive: Archive, view: UploadView, part: tuple[int, str],
                  progress: ProgressCallback | None) -> int:
        number, url = part
        data = archive.read_part(number, view.part_size)
        try:
            for attempt in retrying(True):
                with attempt:
                    check_part_response(self.storage.put(url, content=data))
        except (httpx.TransportError, RetryableStatus) as exc:
            raise _final(exc, "the storage") from None
        if progress:
            progress(len(data))
        return len(data)


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
                        limit: int | None = None) -> JobPage:
        return await self.send(calls.list_jobs(state, project_id, framework, cursor, limit))

    async def cancel(self, job_id: str) -> JobView:
        return await self.send(calls.cancel(job_id))

    async def events(self, job_id: str, after: int = 0, limit: int | None = None) -> EventPage:
        return await self.send(calls.events(job_id, after, limit))

    async def logs(self, job_id: str, after: int = 0, limit: int | None = None) -> LogPage:
        return await self.send(calls.logs(job_id, after, limit))

    async def metrics(self, job_id: str) -> MetricPage:
        return await self.send(calls.metrics(job_id))

    async def predict(self, job_id: str, images: list[Path], conf: float = 0.25, top_k: int = 5) -> PredictResponse:
        return await self.send(calls.predict(job_id, images, conf, top_k))

    async def artifacts(self, job_id: str) -> ArtifactPage:
        return await self.send(calls.artifacts(job_id))

    async def artifact_url(self, job_id: str, name: str) -> str:
        return await self.send(calls.artifact_url(job_id, name))

    # ------------------------------------------------------------ datasets
    async def list_datasets(self, cursor: str | None = None, limit: int | None = None) -> DatasetPage:
        return await self.send(calls.list_datasets(cursor, limit))

    async def iter_datasets(self) -> AsyncIterator[DatasetView]:
        cursor = None
        while True:
            page = await self.list_datasets(cursor)
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

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
                             on_start: Any = None) -> UploadResult:
        archive = await asyncio.to_thread(prepare, path)
        try:
            body = _upload_body(archive, dataset_id, description)
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


def _start(view: UploadView, archive: Archive, on_start: Any, progress: ProgressCallback | None) -> UploadResult:
    """The result of an upload as first opened; tells `on_start` the plan and `progress` the
    bytes already in storage."""
    skipped = len(view.parts_done)
    if on_start:
        on_start(UploadProgress(view.dataset_id, view.version, archive.size, view.parts_total, skipped))
    done_bytes = min(archive.size, skipped * view.part_size) if view.state == VersionState.UPLOADING else archive.size
    if progress and done_bytes:
        progress(done_bytes)
    return UploadResult(view.dataset_id, view.version, view.created, view.parts_total, parts_skipped=skipped,
                        state=view.state)


def _finished(result: UploadResult, sent: list[int], detail: VersionView) -> UploadResult:
    result.parts_sent += len(sent)
    result.bytes_sent += sum(sent)
    result.detail, result.state = detail, detail.state
    return result


def _urls_refused() -> APIError:
    return APIError(403, "the storage kept refusing the presigned URLs (clock skew, or a wrong public S3 "
                         "endpoint setting?)")


def _validated(view: VersionView, deadline: float, timeout: float) -> bool:
    """Whether waiting for the version is over; TimeoutError past the deadline."""
    if view.state in FINAL_VERSION_STATES:
        return True
    if time.monotonic() > deadline:
        raise TimeoutError(f"version {view.version[:12]} still {view.state} after {timeout:g}s")
    return False


def _target(dest: Path, name: str) -> Path:
    leaf = Path(name).name
    if dest.is_dir():
        return dest / leaf
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest
