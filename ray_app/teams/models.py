"""The teams API's bodies and answers: users, tokens, projects, members, the audit log."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ray_app.jobs.types import Text, Timestamp
from ray_app.teams import tokens

USER_ID_PATTERN = r"^[a-z][a-z0-9._-]{1,63}$"
# a project made through the API; projects migrated from job records keep whatever name they had
PROJECT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
TOKEN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$"
RoleName = Literal["viewer", "member", "admin"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserCreate(_Body):
    id: str = Field(pattern=USER_ID_PATTERN, description="the user's handle: lower case, 2-64 characters",
                    examples=["alice"])
    display_name: Text = Field(default="", max_length=200)
    platform_admin: bool = Field(default=False, description="may do everything, in every project")


class UserView(BaseModel):
    id: str
    display_name: str
    platform_admin: bool
    created_at: Timestamp
    created_by: str | None = None
    disabled_at: Timestamp | None = None


class TokenCreate(_Body):
    name: str = Field(pattern=TOKEN_NAME_PATTERN, description="what the token is for, e.g. laptop",
                      examples=["laptop"])
    expires: str | None = Field(default=None, max_length=16, description="lifetime: 12h, 90d, 2w; none: until revoked",
                                examples=["90d"])

    @field_validator("expires")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            tokens.parse_expiry(value)  # ValueError: a 422 naming `expires`
        return value


class TokenView(BaseModel):
    id: str
    name: str
    created_at: Timestamp
    last_used_at: Timestamp | None = None
    expires_at: Timestamp | None = None
    revoked_at: Timestamp | None = None


class TokenCreated(TokenView):
    token: str = Field(description="the secret: shown this once, stored only as its hash")


class UserCreated(BaseModel):
    user: UserView
    token: TokenCreated = Field(description="the user's first token (named `initial`): hand it to them")


class UserPage(BaseModel):
    items: list[UserView]


class TokenPage(BaseModel):
    items: list[TokenView]


class MemberView(BaseModel):
    user_id: str
    role: RoleName
    added_at: Timestamp
    added_by: str | None = None


class ProjectCreate(_Body):
    id: str = Field(pattern=PROJECT_ID_PATTERN, examples=["vision-team"])
    description: Text = Field(default="", max_length=2000)


class ProjectView(BaseModel):
    id: str
    description: str
    created_at: Timestamp
    created_by: str | None = None
    members: list[MemberView] = Field(default_factory=list)
    your_role: RoleName | None = Field(default=None, description="the caller's role here (null: a platform "
                                       "admin who is not a member)")
    max_gpus: float | None = Field(default=None, description="its quota: the most GPUs its jobs may hold "
                                   "at once (null: unlimited)")
    max_cpus: float | None = Field(default=None, description="the most CPUs (null: unlimited)")
    max_running_jobs: int | None = Field(default=None, description="the most jobs offered at once (null: unlimited)")
    weight: float = Field(default=1.0, description="its fair-share weight")
    preemptible: bool = Field(default=True, description="whether its jobs may be preempted")


class ProjectPage(BaseModel):
    items: list[ProjectView]


class MemberSet(_Body):
    role: RoleName


class ProjectRole(BaseModel):
    project_id: str
    role: RoleName


class WhoAmI(BaseModel):
    user_id: str
    display_name: str
    token_name: str = Field(description="the name of the token this request came with")
    platform_admin: bool
    projects: list[ProjectRole]


class AuditEntry(BaseModel):
    seq: int
    at: Timestamp
    user_id: str | None = Field(description="null: the caller was not authenticated")
    token_name: str | None
    action: str = Field(description="the route's operation, e.g. cancel_job")
    method: str
    path: str = Field(description="the request's path (ids, never a body or a query)")
    resource: str | None = Field(description="e.g. job:<id>, dataset:<id>, project:<id>, user:<id>, token:<id>")
    project_id: str | None
    outcome: int = Field(description="the HTTP status answered")
    request_id: str = Field(description="the X-Request-ID header of the answer")


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_cursor: str | None = None
