"""What the sync and async clients share: how an answer is read, how a failure is reported, and
the bookkeeping of an upload and a wait (their transfers differ only in blocking or awaiting)."""

from __future__ import annotations

import time
from pathlib import Path
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

import httpx

from ray_app.client import _calls as calls
from ray_app.client._config import ClientConfig
from ray_app.client._errors import APIError, TransportError
from ray_app.client._retry import RETRY_STATUSES, RetryableStatus
from ray_app.client._uploads import (
    Archive,
    ProgressCallback,
    UploadProgress,
    UploadResult,
)
from ray_app.jobs.export_models import FINAL_EXPORT_STATES, ExportView
from ray_app.sweeps.models import SweepState, SweepView
from ray_app.datasets.models import (
    UploadCreate,
    UploadView,
    VersionState,
    VersionView,
)

T = TypeVar("T")
I_co = TypeVar("I_co", covariant=True)
UPLOAD_ROUNDS = 3  # opens of one upload: the first, and fresh URLs after expired ones
DOWNLOAD_CHUNK = 1 << 20
STREAM_RECONNECTS = 5  # in a row, without a message between
STREAM_READ_S = 60.0  # the server pings every 15 s
FINAL_VERSION_STATES = (VersionState.VALID, VersionState.INVALID)
FINAL_SWEEP_STATES = tuple(s.value for s in SweepState if s.is_terminal)


class Paged(Protocol[I_co]):
    """A page of a cursor-paged list (jobs, datasets, sweeps, the audit log)."""

    @property
    def items(self) -> Sequence[I_co]: ...

    @property
    def next_cursor(self) -> str | None: ...


def pages(fetch: Callable[[str | None], Paged[T]]) -> Iterator[T]:
    """Every item of a cursor-paged list, page after page: `fetch(cursor)` gets one page."""
    cursor = None
    while True:
        page = fetch(cursor)
        yield from page.items
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


async def apages(fetch: Callable[[str | None], Awaitable[Paged[T]]]) -> AsyncIterator[T]:
    """`pages` for the async client."""
    cursor = None
    while True:
        page = await fetch(cursor)
        for item in page.items:
            yield item
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


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


def _upload_body(archive: Archive, dataset_id: str, description: str,
                 project_id: str | None = None) -> UploadCreate:
    return UploadCreate(dataset_id=dataset_id, filename=archive.filename, size_bytes=archive.size,
                        sha256=archive.sha256, description=description, project_id=project_id)


class _Base:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0,
                 config: ClientConfig | None = None):
        self.config = config or ClientConfig.resolve(url, token, timeout)
        self._headers = {"Authorization": f"Bearer {self.config.token}"} if self.config.token else {}

    @classmethod
    def from_env(cls, **kwargs: Any) -> Any:
        """VTP_API_URL and VTP_API_TOKEN (or the local platform's, on its own machine)."""
        return cls(**kwargs)


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


def _wait_over(what: str, state: str, final: Iterable[str], deadline: float, timeout: float) -> bool:
    """Whether waiting for `what` (a dataset version, an export) is over: its state is final;
    TimeoutError past the deadline."""
    if state in final:
        return True
    if time.monotonic() > deadline:
        raise TimeoutError(f"{what} still {state} after {timeout:g}s")
    return False


def _validated(view: VersionView, deadline: float, timeout: float) -> bool:
    return _wait_over(f"version {view.version[:12]}", view.state, FINAL_VERSION_STATES, deadline, timeout)


def _export_done(view: ExportView, deadline: float, timeout: float) -> bool:
    return _wait_over(f"export {view.id}", view.state, FINAL_EXPORT_STATES, deadline, timeout)


def _sweep_done(view: SweepView, deadline: float, timeout: float) -> bool:
    return _wait_over(f"sweep {view.id}", view.state.value, FINAL_SWEEP_STATES, deadline, timeout)


def _target(dest: Path, name: str) -> Path:
    leaf = Path(name).name
    if dest.is_dir():
        return dest / leaf
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest

