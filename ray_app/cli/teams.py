"""`vtp whoami`, `vtp tokens`, `vtp admin users`, `vtp projects` and `vtp audit`: who you are on
the platform, your personal API tokens, users (platform admins), projects, their members and their
quotas (platform admins), and the audit log of every mutating call (platform admins)."""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Column, Table

from ray_app.cli.common import AsJson, Token, Url, api_client, call_api, console, emit, err
from ray_app.cli.queue import projects_set_quota, quota_summary
from ray_app.teams.models import (
    AuditPage,
    ProjectView,
    TokenCreated,
    TokenPage,
    TokenView,
    UserPage,
    UserView,
    WhoAmI,
)

NOT_AGAIN = "this secret is shown once and will not be shown again: store it now"

tokens_app = typer.Typer(no_args_is_help=True, help="Your personal API tokens (the secret is shown once, "
                         "at creation).")
admin_app = typer.Typer(no_args_is_help=True, help="Platform administration (platform admins).")
users_app = typer.Typer(no_args_is_help=True, help="Make, list, disable and enable users (platform admins).")
projects_app = typer.Typer(no_args_is_help=True, help="Projects and their members (viewer, member, admin).")
admin_app.add_typer(users_app, name="users")


class Role(str, Enum):
    viewer = "viewer"
    member = "member"
    admin = "admin"


def _when(value: datetime | None) -> str:
    """A time as the tables show it (the space lets a narrow terminal wrap it, never cut it)."""
    return value.isoformat(" ")[:19] if value else ""


def _token_state(t: TokenView) -> str:
    if t.revoked_at:
        return f"revoked {_when(t.revoked_at)}"
    if t.expires_at:
        return f"{'expired' if t.expires_at <= datetime.now(timezone.utc) else 'expires'} {_when(t.expires_at)}"
    return "active"


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _print_secret(label: str, secret: str) -> None:
    """The secret on a line of its own (no wrapping, no markup: copied as it is), then the warning."""
    console.print(f"{label}:")
    console.print(secret, markup=False, highlight=False, soft_wrap=True)
    console.print(f"[yellow]{NOT_AGAIN}[/yellow]")


# ---------------------------------------------------------------------------- whoami


def whoami(url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """Who the token belongs to: your user, the token's name, platform admin or not, your projects."""
    me = call_api(api_client(url, token).whoami)

    def render(w: WhoAmI) -> None:
        name = f" ({escape(w.display_name)})" if w.display_name else ""
        console.print(f"user            [bold]{w.user_id}[/bold]{name}")
        console.print(f"token           {w.token_name}")
        console.print(f"platform admin  {_yes(w.platform_admin)}")
        if not w.projects:
            console.print("projects        none" + (" (a platform admin sees every project)" if w.platform_admin else ""))
            return
        table = Table(Column("project", no_wrap=True), "role", title="projects")
        for p in w.projects:
            table.add_row(p.project_id, p.role)
        console.print(table)

    emit(me, as_json, render)


# ---------------------------------------------------------------------------- tokens


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Option("--name", help="what the token is for, e.g. laptop")],
    expires: Annotated[Optional[str], typer.Option(help="lifetime: 12h, 90d, 2w (default: until revoked)")] = None,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Make a personal API token; its secret is printed this once (the platform keeps only its hash)."""
    created = call_api(api_client(url, token).create_token, name, expires)

    def render(t: TokenCreated) -> None:
        console.print(f"token [bold]{t.name}[/bold] (id {t.id}), expires {_when(t.expires_at) or 'never'}")
        _print_secret("secret", t.token)
        console.print(f"use it with: export VTP_API_TOKEN=<secret>; revoke it with: vtp tokens revoke {t.id}",
                      soft_wrap=True)

    emit(created, as_json, render)
    if as_json:
        err.print(NOT_AGAIN)


@tokens_app.command("list")
def tokens_list(url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """Your tokens: names and times (never their secrets)."""
    page = call_api(api_client(url, token).list_tokens)

    def render(p: TokenPage) -> None:
        # the id is what `revoke` takes: never cut (the times wrap first)
        table = Table(Column("id", no_wrap=True), Column("name", no_wrap=True), "created", "last used", "state")
        for t in p.items:
            table.add_row(t.id, t.name, _when(t.created_at), _when(t.last_used_at), _token_state(t))
        console.print(table)

    emit(page, as_json, render)


@tokens_app.command("revoke")
def tokens_revoke(token_id: Annotated[str, typer.Argument(help="the token's id (vtp tokens list)")],
                  url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """Revoke one of your tokens: refused from the next request on, everywhere."""
    revoked = call_api(api_client(url, token).revoke_token, token_id)
    emit(revoked, as_json, lambda t: console.print(f"token {t.id} ({t.name}) revoked at {_when(t.revoked_at)}: "
                                                   "refused from now on"))


# ---------------------------------------------------------------------------- admin users


def _render_user(u: UserView) -> None:
    state = f"[red]disabled[/red] since {_when(u.disabled_at)}" if u.disabled_at else "[green]enabled[/green]"
    admin = ", platform admin" if u.platform_admin else ""
    console.print(f"user [bold]{u.id}[/bold]{admin}: {state}")


@users_app.command("create")
def users_create(
    user_id: Annotated[str, typer.Argument(help="the user's handle: lower case, 2-64 characters")],
    display_name: Annotated[str, typer.Option("--display-name", help="the user's name as people read it")] = "",
    platform_admin: Annotated[bool, typer.Option("--platform-admin", help="may do everything, in every "
                                                 "project")] = False,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Make a user; their first token (named `initial`) is printed this once: hand it to them."""
    created = call_api(api_client(url, token).create_user, user_id, display_name, platform_admin)

    def render(c) -> None:
        _render_user(c.user)
        _print_secret(f"first token (named {c.token.name}, id {c.token.id}); hand it to {c.user.id}", c.token.token)
        console.print(f"add them to a project with: vtp projects add-member <project> {c.user.id} --role member",
                      soft_wrap=True)

    emit(created, as_json, render)
    if as_json:
        err.print(NOT_AGAIN)


@users_app.command("list")
def users_list(url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """Every user."""
    page = call_api(api_client(url, token).list_users)

    def render(p: UserPage) -> None:
        table = Table(Column("id", no_wrap=True), "name", "platform admin", "created", "by", "state")
        for u in p.items:
            state = f"disabled {_when(u.disabled_at)}" if u.disabled_at else "enabled"
            table.add_row(u.id, escape(u.display_name), _yes(u.platform_admin), _when(u.created_at), u.created_by or "", state)
        console.print(table)

    emit(page, as_json, render)


@users_app.command("disable")
def users_disable(user_id: str, url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """Disable a user: every token of theirs is refused from the next request on."""
    emit(call_api(api_client(url, token).disable_user, user_id), as_json, _render_user)


@users_app.command("enable")
def users_enable(user_id: str, url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """Enable a disabled user again (tokens revoked meanwhile stay revoked)."""
    emit(call_api(api_client(url, token).enable_user, user_id), as_json, _render_user)


# ---------------------------------------------------------------------------- projects


def _render_project(p: ProjectView) -> None:
    yours = f"  your role: {p.your_role}" if p.your_role else ""
    console.print(f"project [bold]{p.id}[/bold]{yours}" + (f"\n  {escape(p.description)}" if p.description else ""))
    console.print(f"  {quota_summary(p)}")
    if not p.members:
        console.print("no members")
        return
    table = Table(Column("user", no_wrap=True), "role", "added", "by", title="members")
    for m in p.members:
        table.add_row(m.user_id, m.role, _when(m.added_at), m.added_by or "")
    console.print(table)


@projects_app.command("create")
def projects_create(
    project_id: Annotated[str, typer.Argument(help="the project's name (letters, digits, . _ -)")],
    description: Annotated[str, typer.Option(help="what the project is for")] = "",
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Make a project (platform admins); add its members with `vtp projects add-member`."""
    emit(call_api(api_client(url, token).create_project, project_id, description), as_json,
         lambda p: console.print(f"project [bold]{p.id}[/bold] created"))


@projects_app.command("list")
def projects_list(url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """The projects you belong to (every project, for a platform admin)."""
    page = call_api(api_client(url, token).list_projects)

    def render(page) -> None:
        table = Table(Column("project", no_wrap=True), "your role", "members", "created", "description")
        for p in page.items:
            table.add_row(p.id, p.your_role or "", str(len(p.members)), _when(p.created_at), escape(p.description[:40]))
        console.print(table)

    emit(page, as_json, render)


@projects_app.command("show")
def projects_show(project_id: str, url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """A project and its members with their roles."""
    emit(call_api(api_client(url, token).get_project, project_id), as_json, _render_project)


@projects_app.command("add-member")
def projects_add_member(
    project_id: str,
    user_id: str,
    role: Annotated[Role, typer.Option(help="viewer: reads; member: also submits jobs and uploads "
                                       "datasets; admin: also manages members")] = Role.member,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Add a user to a project, or change their role there (project admins)."""
    emit(call_api(api_client(url, token).set_member, project_id, user_id, role.value), as_json, _render_project)


@projects_app.command("remove-member")
def projects_remove_member(project_id: str, user_id: str, url: Url = None, token: Token = None,
                           as_json: AsJson = False) -> None:
    """Remove a user from a project (project admins)."""
    emit(call_api(api_client(url, token).remove_member, project_id, user_id), as_json, _render_project)


projects_app.command("set-quota")(projects_set_quota)  # with the queue it shapes (cli/queue.py)


# ---------------------------------------------------------------------------- audit


def audit(
    user: Annotated[Optional[str], typer.Option("--user", help="only this user's calls")] = None,
    project: Annotated[Optional[str], typer.Option("--project", help="only calls in this project")] = None,
    action: Annotated[Optional[str], typer.Option(help="only this action, e.g. cancel_job, create_token")] = None,
    resource: Annotated[Optional[str], typer.Option(help="only this resource, e.g. job:<id>, user:<id>")] = None,
    since: Annotated[Optional[str], typer.Option(help="only entries at or after this time (ISO 8601)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="entries to show, newest first")] = 50,
    cursor: Annotated[Optional[str], typer.Option(help="continue where a previous listing stopped")] = None,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """The audit log (platform admins): every mutating call, who made it, on what, how it ended."""
    page = call_api(api_client(url, token).audit, user, project, action, resource, since, cursor, limit)

    def render(p: AuditPage) -> None:
        # a narrow terminal folds the long cells: never cut
        table = Table("at", Column("user (token)", overflow="fold"), Column("action", no_wrap=True),
                      Column("resource", overflow="fold"), Column("project", overflow="fold"), "HTTP")
        for e in p.items:
            color = "green" if e.outcome < 400 else "red"
            who = f"{e.user_id} ({e.token_name})" if e.user_id else "-"  # not authenticated
            table.add_row(_when(e.at), who, e.action, e.resource or "", e.project_id or "",
                          f"[{color}]{e.outcome}[/{color}]")
        console.print(table)
        if p.next_cursor:
            console.print(f"[dim]older entries: vtp audit --cursor {p.next_cursor} (with the same filters)[/dim]")

    emit(page, as_json, render)


def register(app: typer.Typer) -> None:
    """Add these commands to `vtp`."""
    app.command("whoami")(whoami)
    app.add_typer(tokens_app, name="tokens")
    app.add_typer(admin_app, name="admin")
    app.add_typer(projects_app, name="projects")
    app.command("audit")(audit)
