"""Client: the blocking client. Each method sends one call of _calls.py; uploads and downloads
add the transfers to and from S3's presigned URLs, which get no API token (it must not leave for
another host). AsyncClient (_async_client.py) has the same methods for asyncio."""

from __future__ import annotations

import time
from datetime import datetime
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx

from ray_app.client import _calls as calls
from ray_app.client._calls import UNSET, Unset
from ray_app.client._config import ClientConfig
from ray_app.client._errors import APIError
from ray_app.client._retry import RetryableStatus, retrying
from ray_app.client._stream import StreamMessage, parse
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
    pages,
    DOWNLOAD_CHUNK,
    STREAM_READ_S,
    STREAM_RECONNECTS,
    UPLOAD_ROUNDS,
    _Base,
    _detail,
    _export_done,
    _sweep_done,
    _final,
    _finished,
    _parsed,
    _request_args,
    _start,
    _target,
    _upload_body,
    _urls_refused,
    _validated,
)

T = TypeVar("T")


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
        """Create a job; its `priority` (0-100, or low, normal, high; default normal) places it in
        the queue: higher first (get_queue)."""
        return self.send(calls.submit(body))

    def get_job(self, job_id: str) -> JobView:
        return self.send(calls.get_job(job_id))

    def list_jobs(self, state: str | None = None, project_id: str | None = None, framework: str | None = None,
                  cursor: str | None = None, limit: int | None = None, id_prefix: str | None = None,
                  sweep_id: str | None = None) -> JobPage:
        """A page of jobs, newest first; `sweep_id`: only that sweep's trials."""
        return self.send(calls.list_jobs(state, project_id, framework, cursor, limit, id_prefix, sweep_id))

    def cancel(self, job_id: str) -> JobView:
        return self.send(calls.cancel(job_id))

    def events(self, job_id: str, after: int = 0, limit: int | None = None) -> EventPage:
        return self.send(calls.events(job_id, after, limit))

    def logs(self, job_id: str, after: int = 0, limit: int | None = None, rank: int | None = None) -> LogPage:
        return self.send(calls.logs(job_id, after, limit, rank))

    def metrics(self, job_id: str) -> MetricPage:
        return self.send(calls.metrics(job_id))

    def predict(self, job_id: str, images: list[Path], conf: float = 0.25, top_k: int = 5) -> PredictResponse:
        return self.send(calls.predict(job_id, images, conf, top_k))

    def export(self, job_id: str, format: str, **options: Any) -> ExportView:
        """Start exporting the job's best checkpoint (options: image_size, half, dynamic); the
        export runs on the cluster: follow it with get_export or wait_export."""
        return self.send(calls.export(job_id, ExportCreate(format=format, **options)))

    def get_export(self, job_id: str, export_id: str) -> ExportView:
        return self.send(calls.get_export(job_id, export_id))

    def list_exports(self, job_id: str) -> ExportPage:
        return self.send(calls.list_exports(job_id))

    def wait_export(self, job_id: str, export_id: str, timeout: float = 600.0, interval: float = 1.0,
                    on_change: Any = None) -> ExportView:
        """The export once it succeeded or failed; `on_change(view)` whenever its state moves."""
        deadline = time.monotonic() + timeout
        state = None
        while True:
            view = self.get_export(job_id, export_id)
            if view.state != state and on_change is not None:
                on_change(view)
            state = view.state
            if _export_done(view, deadline, timeout):
                return view
            time.sleep(interval)

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
                with self.http.stream("GET", calls.stream_path(job_id), params=params,
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

    # ------------------------------------------------------------ sweeps
    def create_sweep(self, body: SweepCreate | dict[str, Any]) -> SweepView:
        """Start a hyperparameter sweep: a base job, a search space over some of its fields, an
        objective. The API checks it whole (a 422 naming the field, as APIError); every trial is
        a job of the sweep's project (list_jobs(sweep_id=...))."""
        return self.send(calls.create_sweep(body))

    def get_sweep(self, sweep_id: str) -> SweepView:
        """A sweep with its trials (params, metric history, status) and its best trial."""
        return self.send(calls.get_sweep(sweep_id))

    def list_sweeps(self, project_id: str | None = None, state: str | None = None, cursor: str | None = None,
                    limit: int | None = None) -> SweepPage:
        """A page of sweeps, newest first; `next_cursor` names the next."""
        return self.send(calls.list_sweeps(project_id, state, cursor, limit))

    def iter_sweeps(self, project_id: str | None = None, state: str | None = None) -> Iterator[SweepSummary]:
        """Every sweep that matches, newest first, page after page."""
        return pages(lambda cursor: self.list_sweeps(project_id, state, cursor))

    def cancel_sweep(self, sweep_id: str) -> SweepView:
        """Cancel the sweep and every trial it runs (idempotent)."""
        return self.send(calls.cancel_sweep(sweep_id))

    def wait_sweep(self, sweep_id: str, timeout: float = 3600.0, interval: float = 1.0,
                   on_change: Any = None) -> SweepView:
        """The sweep once it is final (SUCCEEDED, FAILED or CANCELLED); `on_change(view)` on
        every poll whose answer differs from the last."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            view = self.get_sweep(sweep_id)
            if on_change is not None and view != last:
                on_change(view)
            last = view
            if _sweep_done(view, deadline, timeout):
                return view
            time.sleep(interval)

    # ------------------------------------------------------------ the queue and projects' quotas
    def get_queue(self) -> QueueView:
        """The jobs not running yet, in the order they are offered to the cluster (`position`; None:
        in a retry backoff), each with why it waits (`waiting_for`), and the projects' use against
        their quotas and fair shares, the cluster's capacity and whether preemption is on. The
        controller's last decision: a 503 (APIError, after retries) while none runs. Non-admins
        see their projects' jobs only."""
        return self.send(calls.get_queue())

    def set_quota(self, project_id: str, *, max_gpus: float | None | Unset = UNSET,
                  max_cpus: float | None | Unset = UNSET, max_running_jobs: int | None | Unset = UNSET,
                  weight: float | Unset = UNSET, preemptible: bool | Unset = UNSET) -> ProjectView:
        """Set a project's quota (platform admins): only the arguments given change; None lifts a
        limit (unlimited). `weight`: its fair share against other projects' (> 0); `preemptible`:
        False, its jobs are never preempted. The project with its quota."""
        return self.send(calls.set_quota(project_id, max_gpus, max_cpus, max_running_jobs, weight, preemptible))

    # ------------------------------------------------------------ datasets
    def list_datasets(self, cursor: str | None = None, limit: int | None = None) -> DatasetPage:
        return self.send(calls.list_datasets(cursor, limit))

    def iter_datasets(self) -> Iterator[DatasetView]:
        return pages(lambda cursor: self.list_datasets(cursor))

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
                       on_start: Any = None, project_id: str | None = None) -> UploadResult:
        """Upload a folder or archive as a version of `dataset_id`: parts in parallel straight to
        storage, each retried; an interrupted upload of the same content resumes. Returns once
        the upload is complete (validation then runs on the platform: see wait_version).
        `project_id`: the project a new dataset goes to (default: `default`); a new version of an
        existing dataset goes to its dataset's project."""
        archive = prepare(path)
        try:
            body = _upload_body(archive, dataset_id, description, project_id)
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

    # ------------------------------------------------------------ teams: you, your tokens
    def whoami(self) -> WhoAmI:
        """Who the token belongs to: the user, the token's name, and their projects with roles."""
        return self.send(calls.whoami())

    def create_token(self, name: str, expires: str | None = None) -> TokenCreated:
        """A new personal token (`expires`: 12h, 90d, 2w; none: until revoked). Its secret,
        `.token`, is in this answer only: the platform keeps its hash."""
        return self.send(calls.create_token(name, expires))

    def list_tokens(self) -> TokenPage:
        """Your tokens: names and times, never secrets."""
        return self.send(calls.list_tokens())

    def revoke_token(self, token_id: str) -> TokenView:
        """Refused from the next request on, everywhere."""
        return self.send(calls.revoke_token(token_id))

    # ------------------------------------------------------------ teams: users (platform admins)
    def create_user(self, user_id: str, display_name: str = "", platform_admin: bool = False) -> UserCreated:
        """A user and their first token (named `initial`; its secret in this answer only)."""
        return self.send(calls.create_user(user_id, display_name, platform_admin))

    def list_users(self) -> UserPage:
        return self.send(calls.list_users())

    def disable_user(self, user_id: str) -> UserView:
        return self.send(calls.disable_user(user_id))

    def enable_user(self, user_id: str) -> UserView:
        return self.send(calls.enable_user(user_id))

    # ------------------------------------------------------------ teams: projects and members
    def list_projects(self) -> ProjectPage:
        """The projects you belong to (every project, for a platform admin)."""
        return self.send(calls.list_projects())

    def create_project(self, project_id: str, description: str = "") -> ProjectView:
        return self.send(calls.create_project(project_id, description))

    def get_project(self, project_id: str) -> ProjectView:
        """A project with its members."""
        return self.send(calls.get_project(project_id))

    def set_member(self, project_id: str, user_id: str, role: RoleName) -> ProjectView:
        """Add a member (viewer, member, admin), or change their role."""
        return self.send(calls.set_member(project_id, user_id, role))

    def remove_member(self, project_id: str, user_id: str) -> ProjectView:
        return self.send(calls.remove_member(project_id, user_id))

    # ------------------------------------------------------------ teams: the audit log (platform admins)
    def audit(self, user_id: str | None = None, project_id: str | None = None, action: str | None = None,
              resource: str | None = None, since: datetime | str | None = None, cursor: str | None = None,
              limit: int | None = None) -> AuditPage:
        """A page of the audit log, newest first; `next_cursor` names the next."""
        return self.send(calls.audit(user_id, project_id, action, resource, since, cursor, limit))

    def iter_audit(self, user_id: str | None = None, project_id: str | None = None, action: str | None = None,
                   resource: str | None = None, since: datetime | str | None = None) -> Iterator[AuditEntry]:
        """Every entry that matches, newest first, page after page."""
        return pages(lambda cursor: self.audit(user_id, project_id, action, resource, since, cursor))
