"""Users, personal tokens, projects and members (issue 29; the rules: teams/policy.py).

- /v1/whoami: who the token belongs to, and their projects;
- /v1/tokens: the caller's own tokens (a new one's secret is in the answer once, never again);
- /v1/admin/users: platform admins make, list, disable and enable users;
- /v1/projects: the projects the caller belongs to (all, for a platform admin); platform admins
  make projects, a project's admins manage its members.
"""

from __future__ import annotations

from datetime import datetime, timezone

from fastapi import APIRouter, HTTPException

from ray_app.api.access import Who
from ray_app.api.documented import CONFLICT, PROJECT_NOT_FOUND, USER_NOT_FOUND, USER_ROUTE
from ray_app.store import teams as store_teams
from ray_app.teams import tokens
from ray_app.teams.models import (
    MemberSet,
    ProjectCreate,
    ProjectPage,
    ProjectRole,
    ProjectView,
    TokenCreate,
    TokenCreated,
    TokenPage,
    TokenView,
    UserCreate,
    UserCreated,
    UserPage,
    UserView,
    WhoAmI,
)
from ray_app.teams.policy import BOOTSTRAP_USER, Action

router = APIRouter(tags=["teams"], responses=USER_ROUTE)
INITIAL_TOKEN = "initial"


@router.get("/v1/whoami", response_model=WhoAmI, summary="Who this token belongs to, and their projects")
async def whoami(who: Who) -> WhoAmI:
    p = who.principal
    user = await who.ctx.read(store_teams.get_user, p.user_id)
    return WhoAmI(user_id=p.user_id, display_name=user["display_name"], token_name=p.token_name,
                  platform_admin=p.platform_admin,
                  projects=[ProjectRole.model_validate({"project_id": k, "role": v.label})
                            for k, v in sorted(p.roles.items())])


# ---------------------------------------------------------------- tokens (one's own)


async def _new_token(who: Who, user_id: str, name: str, expires: str | None) -> TokenCreated:
    if user_id == BOOTSTRAP_USER:
        raise HTTPException(422, detail=[{"loc": ["body"], "type": "value_error", "msg": (
            f"{BOOTSTRAP_USER} signs in with the bootstrap tokens of VTP_API_TOKENS; make a user for a "
            "personal token (vtp admin users create)")}])
    secret = tokens.new_secret()
    expires_at = datetime.now(timezone.utc) + tokens.parse_expiry(expires) if expires else None
    row = await who.ctx.store.create_token(user_id, name, tokens.secret_hash(secret), expires_at)
    who.note(f"token:{row['id']}", None)
    return TokenCreated.model_validate({**row, "token": secret})


@router.post("/v1/tokens", status_code=201, response_model=TokenCreated, responses=CONFLICT,
             summary="Make a personal API token (its secret is in this answer only)")
async def create_token(body: TokenCreate, who: Who) -> TokenCreated:
    return await _new_token(who, who.user_id, body.name, body.expires)


@router.get("/v1/tokens", response_model=TokenPage, summary="Your tokens (names and times, never secrets)")
async def list_tokens(who: Who) -> TokenPage:
    rows = await who.ctx.read(store_teams.list_tokens, who.user_id)
    return TokenPage(items=[TokenView.model_validate(r) for r in rows])


@router.delete("/v1/tokens/{token_id}", response_model=TokenView, responses=USER_NOT_FOUND,
               summary="Revoke one of your tokens: refused from the next request on, everywhere")
async def revoke_token(token_id: str, who: Who) -> TokenView:
    who.note(f"token:{token_id}", None)
    return TokenView.model_validate(await who.ctx.store.revoke_token(token_id, who.user_id))


# ---------------------------------------------------------------- users (platform admins)


@router.post("/v1/admin/users", status_code=201, response_model=UserCreated, responses=CONFLICT,
             summary="Make a user, with a first token to hand to them")
async def create_user(body: UserCreate, who: Who) -> UserCreated:
    who.require_platform_admin()
    who.note(f"user:{body.id}", None)
    user = await who.ctx.store.create_user(body.id, body.display_name, body.platform_admin, who.user_id)
    token = await _new_token(who, body.id, INITIAL_TOKEN, None)
    who.note(f"user:{body.id}", None)
    return UserCreated(user=UserView.model_validate(user), token=token)


@router.get("/v1/admin/users", response_model=UserPage, summary="Every user")
async def list_users(who: Who) -> UserPage:
    who.require_platform_admin()
    return UserPage(items=[UserView.model_validate(u) for u in await who.ctx.read(store_teams.list_users)])


async def _set_disabled(who: Who, user_id: str, disabled: bool) -> UserView:
    who.require_platform_admin()
    who.note(f"user:{user_id}", None)
    if user_id == BOOTSTRAP_USER:
        raise HTTPException(409, detail=f"{BOOTSTRAP_USER} is the bootstrap admin: change VTP_API_TOKENS instead")
    return UserView.model_validate(await who.ctx.store.set_user_disabled(user_id, disabled))


@router.post("/v1/admin/users/{user_id}/disable", response_model=UserView, responses={**USER_NOT_FOUND, **CONFLICT},
             summary="Disable a user: every token of theirs is refused from the next request on")
async def disable_user(user_id: str, who: Who) -> UserView:
    return await _set_disabled(who, user_id, True)


@router.post("/v1/admin/users/{user_id}/enable", response_model=UserView, responses={**USER_NOT_FOUND, **CONFLICT},
             summary="Enable a disabled user again (tokens revoked meanwhile stay revoked)")
async def enable_user(user_id: str, who: Who) -> UserView:
    return await _set_disabled(who, user_id, False)


# ---------------------------------------------------------------- projects and members


def project_view(who: Who, row: dict) -> ProjectView:
    role = who.principal.role(row["id"])
    return ProjectView.model_validate({**row, "your_role": role.label if role else None})


@router.get("/v1/projects", response_model=ProjectPage, summary="The projects you belong to (all: platform admins)")
async def list_projects(who: Who) -> ProjectPage:
    rows = await who.ctx.read(store_teams.list_projects, who.visible_projects())
    return ProjectPage(items=[project_view(who, r) for r in rows])


@router.post("/v1/projects", status_code=201, response_model=ProjectView, responses=CONFLICT,
             summary="Make a project (platform admins: projects are what quotas and access are counted by)")
async def create_project(body: ProjectCreate, who: Who) -> ProjectView:
    who.require_platform_admin()
    who.note(f"project:{body.id}", body.id)
    return project_view(who, await who.ctx.store.create_project(body.id, body.description, who.user_id))


@router.get("/v1/projects/{project_id:path}", response_model=ProjectView, responses=PROJECT_NOT_FOUND,
            summary="A project and its members")
async def get_project(project_id: str, who: Who) -> ProjectView:
    return project_view(who, await who.project(project_id))


@router.put("/v1/projects/{project_id:path}/members/{user_id}", response_model=ProjectView,
            responses={**PROJECT_NOT_FOUND, 422: {"description": "unknown user"}},
            summary="Add a member to the project, or change their role (project admins)")
async def set_member(project_id: str, user_id: str, body: MemberSet, who: Who) -> ProjectView:
    await who.project(project_id, Action.MANAGE_MEMBERS)
    who.note(f"member:{project_id}/{user_id}", project_id)
    try:
        row = await who.ctx.store.set_member(project_id, user_id, body.role, who.user_id)
    except store_teams.UserNotFound as exc:
        raise HTTPException(422, detail=[{"loc": ["path", "user_id"], "type": "value_error",
                                          "msg": exc.detail}]) from None
    return project_view(who, row)


@router.delete("/v1/projects/{project_id:path}/members/{user_id}", response_model=ProjectView,
               responses=PROJECT_NOT_FOUND, summary="Remove a member (project admins)")
async def remove_member(project_id: str, user_id: str, who: Who) -> ProjectView:
    await who.project(project_id, Action.MANAGE_MEMBERS)
    who.note(f"member:{project_id}/{user_id}", project_id)
    return project_view(who, await who.ctx.store.remove_member(project_id, user_id))
