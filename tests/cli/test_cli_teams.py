"""`vtp whoami`, `vtp tokens`, `vtp admin users`, `vtp projects` and `vtp audit` against the real
platform (SQLite), as users run them: the CLI in-process (typer's CliRunner), with the API URL and
token in VTP_API_URL / VTP_API_TOKEN as on a user's machine."""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner, Result

from ray_app.cli.main import app
from tests.fixtures.platform import Platform
from tests.fixtures.teams import make_project, make_user, suffix

runner = CliRunner()
SECRET = re.compile(r"^(vtp_\S+)$", re.MULTILINE)


def vtp(p: Platform, token: str, *args: str, ok: bool = True) -> Result:
    result = runner.invoke(app, list(args), env={"VTP_API_URL": p.base_url, "VTP_API_TOKEN": token})
    if ok:
        assert result.exit_code == 0, f"vtp {' '.join(args)}: {result.exit_code}\n{result.output}"
    return result


def as_json(p: Platform, token: str, *args: str) -> dict:
    return json.loads(vtp(p, token, *args, "--json").stdout)


def secret_printed_once(result: Result) -> str:
    """The one secret in the output, on a line of its own, with the warning that it is not shown again."""
    secrets = SECRET.findall(result.stdout)
    assert len(secrets) == 1, result.output
    assert result.output.count(secrets[0]) == 1
    assert "will not be shown again" in result.output
    return secrets[0]


def test_admin_makes_a_user_who_manages_tokens_and_members_and_the_audit_log_has_it(platform):
    p = platform
    admin = p.api_token
    project = make_project(p)
    user = f"cli-{suffix()}"

    # an admin makes the user: their first token, printed once
    created = vtp(p, admin, "admin", "users", "create", user, "--display-name", "CLI User")
    initial = secret_printed_once(created)
    assert f"user {user}" in created.stdout
    vtp(p, admin, "projects", "add-member", project, user, "--role", "viewer")

    # the user, with that token, sees themselves, their project and role
    me = vtp(p, initial, "whoami").stdout
    assert re.search(rf"user\s+{user} \(CLI User\)", me) and re.search(r"token\s+initial", me)
    assert re.search(r"platform admin\s+no", me) and re.search(rf"{project}\s.*\bviewer\b", me), me

    # a new token: printed once; it works; listed by name, never with a secret
    made = vtp(p, initial, "tokens", "create", "--name", "laptop", "--expires", "90d")
    laptop = secret_printed_once(made)
    laptop_id = re.search(r"\(id ([0-9a-f]+)\)", made.stdout).group(1)
    assert as_json(p, laptop, "whoami") == {
        "user_id": user, "display_name": "CLI User", "token_name": "laptop", "platform_admin": False,
        "projects": [{"project_id": project, "role": "viewer"}]}
    listed = vtp(p, initial, "tokens", "list")
    assert "laptop" in listed.stdout and "initial" in listed.stdout and laptop_id in listed.stdout
    listed_json = vtp(p, initial, "tokens", "list", "--json").stdout
    assert {t["name"] for t in json.loads(listed_json)["items"]} == {"initial", "laptop"}
    for out in (listed.output, listed_json):
        assert laptop not in out and initial not in out and "vtp_" not in out

    # revoked: refused at once, saying why
    assert f"token {laptop_id} (laptop) revoked" in vtp(p, initial, "tokens", "revoke", laptop_id).stdout
    refused = vtp(p, laptop, "whoami", ok=False)
    assert refused.exit_code == 3 and "401" in refused.stderr and "revoked" in refused.stderr, refused.output
    assert vtp(p, initial, "whoami").exit_code == 0  # the other token still works

    # the same PUT changes a role: made the project's admin, the user manages its members
    vtp(p, admin, "projects", "add-member", project, user, "--role", "admin")
    other = make_user(p)
    assert [m["user_id"] for m in as_json(p, initial, "projects", "show", project)["members"]] == [user]
    vtp(p, initial, "projects", "add-member", project, other.user_id, "--role", "member")
    shown = vtp(p, initial, "projects", "show", project).stdout
    assert re.search(rf"{user}\s.*\badmin\b", shown) and re.search(rf"{other.user_id}\s.*\bmember\b", shown), shown
    members = {m["user_id"]: m["role"] for m in as_json(p, initial, "projects", "show", project)["members"]}
    assert members == {user: "admin", other.user_id: "member"}
    vtp(p, initial, "projects", "remove-member", project, other.user_id)
    assert [m["user_id"] for m in as_json(p, initial, "projects", "show", project)["members"]] == [user]
    assert project in vtp(p, initial, "projects", "list").stdout

    # the audit log (platform admins): who did what, on what, newest first
    mine = as_json(p, admin, "audit", "--user", user)["items"]
    assert [(e["action"], e["resource"]) for e in mine] == [
        ("remove_member", f"member:{project}/{other.user_id}"),
        ("set_member", f"member:{project}/{other.user_id}"),
        ("revoke_token", f"token:{laptop_id}"),
        ("create_token", f"token:{laptop_id}"),
    ]
    assert all(e["outcome"] < 300 for e in mine) and mine[2]["token_name"] == "initial"
    made_user = as_json(p, admin, "audit", "--action", "create_user", "--limit", "500")["items"]
    assert any(e["resource"] == f"user:{user}" and e["user_id"] == "admin" for e in made_user)
    assert vtp(p, admin, "audit", "--user", user, "--limit", "2").exit_code == 0  # the table
    denied = vtp(p, initial, "audit", ok=False)  # not a platform admin
    assert denied.exit_code == 3 and "403" in denied.stderr


def test_admin_disables_and_enables_a_user_and_makes_projects(platform):
    p = platform
    admin = p.api_token
    user = make_user(p)
    assert any(u["id"] == user.user_id for u in as_json(p, admin, "admin", "users", "list")["items"])

    assert "disabled" in vtp(p, admin, "admin", "users", "disable", user.user_id).stdout
    refused = vtp(p, user.token, "whoami", ok=False)
    assert refused.exit_code == 3 and "user disabled" in refused.stderr
    assert "enabled" in vtp(p, admin, "admin", "users", "enable", user.user_id).stdout
    assert as_json(p, user.token, "whoami")["user_id"] == user.user_id

    project = f"proj-{suffix()}"
    assert f"project {project} created" in vtp(p, admin, "projects", "create", project, "--description",
                                                 "made by the CLI").stdout
    assert project in {q["id"] for q in as_json(p, admin, "projects", "list")["items"]}
    assert project not in {q["id"] for q in as_json(p, user.token, "projects", "list")["items"]}
    # a user is not a platform admin: refused, with the API's reason
    denied = vtp(p, user.token, "admin", "users", "create", f"x-{suffix()}", ok=False)
    assert denied.exit_code == 3 and "platform admin" in denied.stderr
    # bad input: the API's 422, named
    bad = vtp(p, user.token, "tokens", "create", "--name", "ci", "--expires", "soon", ok=False)
    assert bad.exit_code == 3 and "expires" in bad.stderr
