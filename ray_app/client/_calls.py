"""Each API call once: its method, path, body and how its answer is read. The sync and async
clients (_client.py) only send them, so the API's shape is written down in one place."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, Final, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from ray_app.datasets.models import ArtifactPage, DatasetPage, DatasetView, UploadCreate, UploadView, VersionView
from ray_app.jobs.export_models import ExportCreate, ExportPage, ExportView
from ray_app.jobs.api_models import EventPage, JobCreate, JobPage, JobView, LogPage, MetricPage, PredictResponse
from ray_app.scheduling.models import QueueView
from ray_app.sweeps.models import SweepCreate, SweepPage, SweepView
from ray_app.teams.models import (
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

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, Any] | None = None
    json: Any = None
    files: Any = None
    data: Any = None
    idempotent: bool = True  # safe to send again when the answer was lost (_retry.py)
    timeout: float | None = None
    follow_redirects: bool = True


def _model(model: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: model.model_validate_json(response.content)


def _nothing(_: httpx.Response) -> None:
    return None


def _location(response: httpx.Response) -> str:
    return response.headers["location"]


def _id(value: str) -> str:
    return quote(value, safe="")


def _params(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


class Unset(Enum):
    """The type of UNSET: an argument not given (where None means something: "unlimited")."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = Unset.UNSET


def _given(**values: Any) -> dict[str, Any]:
    """The values given (None included: it is sent as null)."""
    return {k: v for k, v in values.items() if v is not UNSET}


# ---------------------------------------------------------------- jobs


def submit(body: JobCreate | dict[str, Any]) -> Call[JobView]:
    payload = body.model_dump(mode="json", exclude_unset=True) if isinstance(body, JobCreate) else body
    # not idempotent: a create whose answer was lost, sent again, would make a second job
    return Call("POST", "/v1/jobs", _model(JobView), json=payload, idempotent=False)


def get_job(job_id: str) -> Call[JobView]:
    return Call("GET", f"/v1/jobs/{_id(job_id)}", _model(JobView))


def list_jobs(state: str | None = None, project_id: str | None = None, framework: str | None = None,
              cursor: str | None = None, limit: int | None = None, id_prefix: str | None = None,
              sweep_id: str | None = None) -> Call[JobPage]:
    """`sweep_id`: only that sweep's trials."""
    return Call("GET", "/v1/jobs", _model(JobPage), params=_params(
        state=state, project_id=project_id, framework=framework, cursor=cursor, limit=limit, id_prefix=id_prefix,
        sweep_id=sweep_id))


def cancel(job_id: str) -> Call[JobView]:
    return Call("POST", f"/v1/jobs/{_id(job_id)}/cancel", _model(JobView))  # idempotent by the API's word


def events(job_id: str, after: int = 0, limit: int | None = None) -> Call[EventPage]:
    return Call("GET", f"/v1/jobs/{_id(job_id)}/events", _model(EventPage), params=_params(after=after, limit=limit))


def logs(job_id: str, after: int = 0, limit: int | None = None, rank: int | None = None) -> Call[LogPage]:
    """`rank`: only that rank's lines (a gang's); a page may then be empty with a next_after."""
    return Call("GET", f"/v1/jobs/{_id(job_id)}/logs", _model(LogPage),
                params=_params(after=after, limit=limit, rank=rank))


def metrics(job_id: str) -> Call[MetricPage]:
    return Call("GET", f"/v1/jobs/{_id(job_id)}/metrics", _model(MetricPage))


def predict(job_id: str, images: list[Path], conf: float = 0.25, top_k: int = 5) -> Call[PredictResponse]:
    files = [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in images]
    return Call("POST", f"/v1/jobs/{_id(job_id)}/predict", _model(PredictResponse), files=files,
                data={"conf": str(conf), "top_k": str(top_k)}, timeout=300)


def stream_path(job_id: str) -> str:
    """GET: the job's Server-Sent Events (read as a stream: Client.stream, _stream.py)."""
    return f"/v1/jobs/{_id(job_id)}/stream"


def artifacts(job_id: str) -> Call[ArtifactPage]:
    return Call("GET", f"/v1/jobs/{_id(job_id)}/artifacts", _model(ArtifactPage))


def artifact_url(job_id: str, name: str) -> Call[str]:
    """The presigned URL the API redirects to (not followed: the token must not go to S3)."""
    return Call("GET", f"/v1/jobs/{_id(job_id)}/artifacts/{quote(name, safe='/')}", _location,
                follow_redirects=False)


def export(job_id: str, body: ExportCreate) -> Call[ExportView]:
    # not idempotent: sent again, it would start a second export
    return Call("POST", f"/v1/jobs/{_id(job_id)}/exports", _model(ExportView),
                json=body.model_dump(mode="json", exclude_none=True), idempotent=False)


def get_export(job_id: str, export_id: str) -> Call[ExportView]:
    return Call("GET", f"/v1/jobs/{_id(job_id)}/exports/{_id(export_id)}", _model(ExportView))


def list_exports(job_id: str) -> Call[ExportPage]:
    return Call("GET", f"/v1/jobs/{_id(job_id)}/exports", _model(ExportPage))


# ---------------------------------------------------------------- sweeps


def create_sweep(body: SweepCreate | dict[str, Any]) -> Call[SweepView]:
    payload = body.model_dump(mode="json", exclude_unset=True) if isinstance(body, SweepCreate) else body
    # not idempotent: a create whose answer was lost, sent again, would start a second sweep
    return Call("POST", "/v1/sweeps", _model(SweepView), json=payload, idempotent=False)


def get_sweep(sweep_id: str) -> Call[SweepView]:
    return Call("GET", f"/v1/sweeps/{_id(sweep_id)}", _model(SweepView))


def list_sweeps(project_id: str | None = None, state: str | None = None, cursor: str | None = None,
                limit: int | None = None) -> Call[SweepPage]:
    return Call("GET", "/v1/sweeps", _model(SweepPage), params=_params(
        project_id=project_id, state=state, cursor=cursor, limit=limit))


def cancel_sweep(sweep_id: str) -> Call[SweepView]:
    return Call("POST", f"/v1/sweeps/{_id(sweep_id)}/cancel", _model(SweepView))  # idempotent by the API's word


# ---------------------------------------------------------------- the queue and projects' quotas


def get_queue() -> Call[QueueView]:
    """The jobs waiting, in the order they are offered, and the projects' use against quota and
    share (the controller's last pass; a 503 while no controller runs)."""
    return Call("GET", "/v1/queue", _model(QueueView))


def set_quota(project_id: str, max_gpus: float | None | Unset = UNSET, max_cpus: float | None | Unset = UNSET,
              max_running_jobs: int | None | Unset = UNSET, weight: float | Unset = UNSET,
              preemptible: bool | Unset = UNSET) -> Call[ProjectView]:
    """Only the fields given are sent (the others stay as they are); None lifts a limit (null).
    A PUT: the same again changes nothing."""
    body = _given(max_gpus=max_gpus, max_cpus=max_cpus, max_running_jobs=max_running_jobs, weight=weight,
                  preemptible=preemptible)
    return Call("PUT", f"/v1/projects/{_id(project_id)}/quota", _model(ProjectView), json=body)


# ---------------------------------------------------------------- datasets


def open_upload(body: UploadCreate) -> Call[UploadView]:
    # idempotent: the same content opens the same version (and resumes its upload)
    return Call("POST", "/v1/datasets", _model(UploadView), json=body.model_dump(mode="json", exclude_none=True))


def complete_upload(dataset_id: str, version: str) -> Call[VersionView]:
    return Call("POST", f"/v1/datasets/{_id(dataset_id)}/versions/{_id(version)}/complete", _model(VersionView))


def list_datasets(cursor: str | None = None, limit: int | None = None) -> Call[DatasetPage]:
    return Call("GET", "/v1/datasets", _model(DatasetPage), params=_params(cursor=cursor, limit=limit))


def get_dataset(dataset_id: str) -> Call[DatasetView]:
    return Call("GET", f"/v1/datasets/{_id(dataset_id)}", _model(DatasetView))


def get_version(dataset_id: str, version: str) -> Call[VersionView]:
    return Call("GET", f"/v1/datasets/{_id(dataset_id)}/versions/{_id(version)}", _model(VersionView))


def delete_dataset(dataset_id: str) -> Call[None]:
    return Call("DELETE", f"/v1/datasets/{_id(dataset_id)}", _nothing)


# ---------------------------------------------------------------- teams (users, tokens, projects, audit)
# bodies go as given: the API validates them (a 422 naming the field, as APIError)


def whoami() -> Call[WhoAmI]:
    return Call("GET", "/v1/whoami", _model(WhoAmI))


def create_token(name: str, expires: str | None = None) -> Call[TokenCreated]:
    # not idempotent: sent again, it would make a second token (or a 409 for the name)
    return Call("POST", "/v1/tokens", _model(TokenCreated), json=_params(name=name, expires=expires),
                idempotent=False)


def list_tokens() -> Call[TokenPage]:
    return Call("GET", "/v1/tokens", _model(TokenPage))


def revoke_token(token_id: str) -> Call[TokenView]:
    return Call("DELETE", f"/v1/tokens/{_id(token_id)}", _model(TokenView))  # idempotent by the API's word


def create_user(user_id: str, display_name: str = "", platform_admin: bool = False) -> Call[UserCreated]:
    body = {"id": user_id, "display_name": display_name, "platform_admin": platform_admin}
    # not idempotent: the answer holds the user's first token, which a repeat (a 409) would not
    return Call("POST", "/v1/admin/users", _model(UserCreated), json=body, idempotent=False)


def list_users() -> Call[UserPage]:
    return Call("GET", "/v1/admin/users", _model(UserPage))


def disable_user(user_id: str) -> Call[UserView]:
    return Call("POST", f"/v1/admin/users/{_id(user_id)}/disable", _model(UserView))  # idempotent


def enable_user(user_id: str) -> Call[UserView]:
    return Call("POST", f"/v1/admin/users/{_id(user_id)}/enable", _model(UserView))  # idempotent


def list_projects() -> Call[ProjectPage]:
    return Call("GET", "/v1/projects", _model(ProjectPage))


def create_project(project_id: str, description: str = "") -> Call[ProjectView]:
    # not idempotent: a repeat whose first answer was lost is a 409
    return Call("POST", "/v1/projects", _model(ProjectView), json={"id": project_id, "description": description},
                idempotent=False)


def get_project(project_id: str) -> Call[ProjectView]:
    return Call("GET", f"/v1/projects/{_id(project_id)}", _model(ProjectView))


def set_member(project_id: str, user_id: str, role: RoleName) -> Call[ProjectView]:
    """Add a member, or change their role (a PUT: the same again changes nothing)."""
    return Call("PUT", f"/v1/projects/{_id(project_id)}/members/{_id(user_id)}", _model(ProjectView),
                json={"role": role})


def remove_member(project_id: str, user_id: str) -> Call[ProjectView]:
    return Call("DELETE", f"/v1/projects/{_id(project_id)}/members/{_id(user_id)}", _model(ProjectView))


def audit(user_id: str | None = None, project_id: str | None = None, action: str | None = None,
          resource: str | None = None, since: datetime | str | None = None, cursor: str | None = None,
          limit: int | None = None) -> Call[AuditPage]:
    """The audit log, newest first (platform admins)."""
    when = since.isoformat() if isinstance(since, datetime) else since
    return Call("GET", "/v1/audit", _model(AuditPage), params=_params(
        user_id=user_id, project_id=project_id, action=action, resource=resource, since=when, cursor=cursor,
        limit=limit))
