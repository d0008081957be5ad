"""Who is calling, and may they: the user side of the API's authentication and authorization.

`caller` (a dependency of every user route) turns the bearer token into a `Principal`
(teams/policy.py): a bootstrap token of VTP_API_TOKENS is the platform admin `admin`, compared in
memory; a personal token (`vtp_…`) is looked up by its SHA-256 on this replica's own engine on
EVERY request, never cached, so a revoked token, an expired one or a disabled user is refused by
the next request on every replica and on the gateway. Trainer callbacks never come here (their JWTs,
deps.require_callback).

Then `Caller.job(...)`, `.dataset(...)`, `.project(...)` load the resource and ask the policy:
HIDE answers exactly the 404 of a resource that does not exist; FORBID is 403 with the role it
takes. Each notes the resource and its project for the audit log (api/audit.py).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ray_app.api.context import AppContext
from ray_app.api.deps import context
from ray_app.auth import api_tokens
from ray_app.jobs.job import Job
from ray_app.store import datasets as store_datasets
from ray_app.store import reads
from ray_app.store import sweeps as store_sweeps
from ray_app.store import teams as store_teams
from ray_app.teams import tokens
from ray_app.teams.models import PROJECT_ID_PATTERN
from ray_app.teams.policy import BOOTSTRAP_USER, Action, Decision, Principal, Role, decide, refusal

log = logging.getLogger("ray_app.api")

_user_bearer = HTTPBearer(auto_error=False, scheme_name="APIToken",
                          description="A personal API token (`vtp tokens create`), or a bootstrap token "
                                      "of VTP_API_TOKENS (platform admin).")
LAST_USED_EVERY_S = 60.0  # a token's last_used_at is written at most this often (a write per request is not)
BOOTSTRAP_TOKEN_NAME = "bootstrap"


def unprocessable(field: str, msg: str) -> HTTPException:
    """A 422 in the shape of FastAPI's own, so clients parse one format."""
    return HTTPException(422, detail=[{"loc": ["body", field], "msg": msg, "type": "value_error"}])


def unauthorized(reason: str) -> HTTPException:
    return HTTPException(status_code=401, detail=reason, headers={"WWW-Authenticate": "Bearer"})


@dataclass
class AuditNotes:
    """What a request did, as the audit log records it; filled by the route's checks."""

    principal: Principal | None = None
    resource: str | None = None
    project_id: str | None = None
    trainer: bool = False  # a trainer's callback token (on /mlflow): not a user's call


def audit_notes(request: Request) -> AuditNotes:
    notes = getattr(request.state, "audit", None)
    if notes is None:  # an app without the audit middleware (the gateway's callback app)
        notes = request.state.audit = AuditNotes()
    return notes


async def resolve(ctx: AppContext, token: str | None) -> Principal:
    """The principal a bearer token stands for, or 401 saying why not."""
    if not token:
        raise unauthorized("missing bearer API token")
    if api_tokens.is_valid(token, ctx.api_tokens):
        return Principal(BOOTSTRAP_USER, BOOTSTRAP_TOKEN_NAME, platform_admin=True)
    if not tokens.looks_personal(token):
        raise unauthorized("invalid API token")
    row = await ctx.read(store_teams.token_owner, tokens.secret_hash(token))
    if row is None:
        raise unauthorized("invalid API token")
    if row["revoked_at"] is not None:
        raise unauthorized("API token revoked")
    now = time.time()
    if row["expires_at"] is not None and row["expires_at"].timestamp() <= now:
        raise unauthorized("API token expired")
    if row["disabled_at"] is not None:
        raise unauthorized("user disabled")
    used = row["last_used_at"]
    if used is None or now - used.timestamp() > LAST_USED_EVERY_S:
        _touch(ctx, row["token_id"])
    return Principal(row["user_id"], row["token_name"], platform_admin=bool(row["platform_admin"]),
                     roles={p: Role.parse(r) for p, r in row["roles"].items()}, token_id=row["token_id"])


_pending: set[asyncio.Task[Any]] = set()


def _touch(ctx: AppContext, token_id: str) -> None:
    """Record the token's use, off the request's path: a lost write only leaves last_used_at older."""
    async def touch() -> None:
        try:
            await ctx.store.token_used(token_id)
        except Exception as exc:
            log.debug("last use of token %s not recorded: %s", token_id, exc)

    task = asyncio.get_running_loop().create_task(touch())
    _pending.add(task)
    task.add_done_callback(_pending.discard)


@dataclass
class Caller:
    """The authenticated caller of one request, with the checks its route asks for."""

    principal: Principal
    ctx: AppContext
    notes: AuditNotes = field(default_factory=AuditNotes)
    token: str | None = field(default=None, repr=False)
    checked_at: float = field(default_factory=time.monotonic)  # when `token` was last found good

    @property
    def user_id(self) -> str:
        return self.principal.user_id

    def note(self, resource: str | None, project_id: str | None) -> None:
        self.notes.resource, self.notes.project_id = resource, project_id

    def check(self, action: Action, project_id: str, hidden: Exception, owner: str | None = None) -> None:
        """Raise `hidden` (the resource's own 404) or 403 unless the policy allows it."""
        decision = decide(self.principal, action, project_id, owner)
        if decision is Decision.HIDE:
            raise hidden
        if decision is Decision.FORBID:
            raise HTTPException(403, detail=refusal(self.principal, action, project_id))

    async def job(self, job_id: str, action: Action = Action.READ) -> Job:
        """The job, if the caller may take `action` on it; a hidden one is the 404 of no job."""
        self.note(f"job:{job_id}", None)
        job = await self.ctx.reads.get_job(job_id)
        self.note(f"job:{job_id}", job.project_id)
        self.check(action, job.project_id, reads.not_found(job_id), owner=job.created_by)
        return job

    async def sweep(self, sweep_id: str, action: Action = Action.READ) -> dict[str, Any]:
        """The sweep with its trials, if the caller may take `action` on it (a hidden one: 404);
        cancelling it is the owner's or a project admin's, as for a job."""
        self.note(f"sweep:{sweep_id}", None)
        view = await self.ctx.read(store_sweeps.sweep_view, sweep_id)
        self.note(f"sweep:{sweep_id}", view["project_id"])
        self.check(action, view["project_id"], store_sweeps.SweepNotFound(f"sweep {sweep_id} not found"),
                   owner=view["created_by"])
        return view

    async def dataset(self, dataset_id: str, action: Action = Action.READ) -> dict[str, Any]:
        """The dataset's row, if the caller may take `action` on it (a hidden one: 404)."""
        self.note(f"dataset:{dataset_id}", None)
        row = await self.ctx.read(store_datasets.dataset_row, dataset_id)
        if row is None:
            raise store_datasets.DatasetNotFound(f"dataset {dataset_id} not found")
        self.check_dataset(row, action)
        return row

    def check_dataset(self, row: dict[str, Any], action: Action) -> None:
        """`dataset` for a dataset's row the route has read already."""
        self.note(f"dataset:{row['id']}", row["project_id"])
        self.check(action, row["project_id"], store_datasets.DatasetNotFound(f"dataset {row['id']} not found"),
                   owner=row.get("created_by"))

    async def project(self, project_id: str, action: Action = Action.READ) -> dict[str, Any]:
        """The project with its members, if the caller may take `action` in it (hidden: 404)."""
        self.note(f"project:{project_id}", project_id)
        missing = store_teams.ProjectNotFound(f"project {project_id} not found")
        self.check(action, project_id, missing)
        try:
            return await self.ctx.read(store_teams.get_project, project_id)
        except store_teams.ProjectNotFound:
            raise missing from None

    async def submit_to(self, project_id: str, field: str = "project_id") -> bool:
        """Check that the caller may submit jobs or datasets to this project (`field`: the body's
        field naming it). A platform admin may name a project that does not exist yet: True, and
        `make_project` makes it once the rest of the request is found valid (before projects were
        records, a job's project_id was any name: scripts keep working). Anyone else gets the same
        422 for a project that does not exist and for one they are not a member of."""
        self.note(None, project_id)
        missing = unprocessable(field, f"project {project_id} not found (or you are not a member)")
        self.check(Action.SUBMIT, project_id, missing)
        if not self.principal.platform_admin or await self.ctx.read(store_teams.project_row, project_id) is not None:
            return False
        if not re.fullmatch(PROJECT_ID_PATTERN, project_id):
            raise unprocessable(field, f"project {project_id!r} not found, and not a name a project can "
                                       "have (letters, digits, . _ -)")
        return True

    async def make_project(self, project_id: str) -> None:
        await self.ctx.store.create_project(project_id, "", self.user_id, exist_ok=True)

    async def still_valid(self, every_s: float) -> bool:
        """For a long-lived answer (a stream), called as it goes on: the token is still good (not
        revoked or expired, the user not disabled), looked up again at most every `every_s`; the
        principal's roles are read again with it, for the caller to check."""
        now = time.monotonic()
        if now - self.checked_at < every_s:
            return True
        try:
            self.principal = await resolve(self.ctx, self.token)
        except HTTPException:
            return False
        self.checked_at = now
        return True

    def require_platform_admin(self) -> None:
        if not self.principal.platform_admin:
            raise HTTPException(403, detail="this takes a platform admin")

    def visible_projects(self) -> list[str] | None:
        return self.principal.visible_projects()


async def caller(
    request: Request, ctx: Annotated[AppContext, Depends(context)],
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_user_bearer)],
) -> Caller:
    notes = audit_notes(request)
    token = creds.credentials if creds else None
    notes.principal = await resolve(ctx, token)
    return Caller(notes.principal, ctx, notes, token)


Who = Annotated[Caller, Depends(caller)]
User = Depends(caller)
