"""The teams calls of the Python client without a platform (httpx's MockTransport): what each
sends, which are never sent twice, the audit log read page after page, and an upload naming its
project. Against the real platform: tests/cli/test_cli_teams.py."""

from __future__ import annotations

import asyncio
import json
import zipfile

import httpx
import pytest

from ray_app.client import AsyncClient, TransportError
from tests.client.mock_api import client_with

NOW = "2026-12-01T00:00:00Z"
TOKEN = {"id": "t1", "name": "laptop", "created_at": NOW}
USER = {"id": "alice", "display_name": "Alice", "platform_admin": False, "created_at": NOW}
PROJECT = {"id": "vision", "description": "", "created_at": NOW,
           "members": [{"user_id": "alice", "role": "member", "added_at": NOW}], "your_role": "admin"}


def entry(seq: int) -> dict:
    return {"seq": seq, "at": NOW, "user_id": "alice", "token_name": "laptop", "action": "cancel_job",
            "method": "POST", "path": "/v1/jobs/j/cancel", "resource": "job:j", "project_id": "vision",
            "outcome": 200, "request_id": f"r{seq}"}


def answers(request: httpx.Request) -> httpx.Response:
    """The API's answers by method and path."""
    path, method = request.url.path, request.method
    if path == "/v1/whoami":
        return httpx.Response(200, json={"user_id": "alice", "display_name": "Alice", "token_name": "laptop",
                                         "platform_admin": False,
                                         "projects": [{"project_id": "vision", "role": "member"}]})
    if path == "/v1/tokens":
        if method == "POST":
            return httpx.Response(201, json={**TOKEN, "token": "vtp_secret"})
        return httpx.Response(200, json={"items": [TOKEN]})
    if path.startswith("/v1/tokens/"):
        return httpx.Response(200, json={**TOKEN, "revoked_at": NOW})
    if path == "/v1/admin/users":
        if method == "POST":
            return httpx.Response(201, json={"user": USER, "token": {**TOKEN, "name": "initial", "token": "vtp_x"}})
        return httpx.Response(200, json={"items": [USER]})
    if path.startswith("/v1/admin/users/"):
        return httpx.Response(200, json={**USER, "disabled_at": NOW if path.endswith("/disable") else None})
    if path == "/v1/projects" and method == "GET":
        return httpx.Response(200, json={"items": [PROJECT]})
    if path.startswith("/v1/projects"):
        return httpx.Response(201 if method == "POST" else 200, json=PROJECT)
    raise AssertionError(f"unexpected {method} {path}")


def test_each_teams_call_sends_its_method_path_and_body_and_reads_the_apis_model():
    sent = []

    def handler(request):
        sent.append((request.method, request.url.path, json.loads(request.content) if request.content else None))
        return answers(request)

    c = client_with(handler)
    assert c.whoami().projects[0].role == "member"
    assert c.create_token("laptop", expires="90d").token == "vtp_secret"
    assert c.create_token("ci").name == "laptop"
    assert c.list_tokens().items[0].id == "t1"
    assert c.revoke_token("t1").revoked_at is not None
    made = c.create_user("alice", display_name="Alice")
    assert (made.user.id, made.token.name, made.token.token) == ("alice", "initial", "vtp_x")
    assert c.list_users().items[0].id == "alice"
    assert c.disable_user("alice").disabled_at is not None and c.enable_user("alice").disabled_at is None
    assert c.list_projects().items[0].your_role == "admin"
    assert c.create_project("vision", "CV").id == "vision"
    assert c.get_project("vision").members[0].user_id == "alice"
    assert c.set_member("vision", "alice", "admin").id == "vision"
    assert c.remove_member("vision", "alice").id == "vision"
    assert sent == [
        ("GET", "/v1/whoami", None),
        ("POST", "/v1/tokens", {"name": "laptop", "expires": "90d"}),
        ("POST", "/v1/tokens", {"name": "ci"}),
        ("GET", "/v1/tokens", None),
        ("DELETE", "/v1/tokens/t1", None),
        ("POST", "/v1/admin/users", {"id": "alice", "display_name": "Alice", "platform_admin": False}),
        ("GET", "/v1/admin/users", None),
        ("POST", "/v1/admin/users/alice/disable", None),
        ("POST", "/v1/admin/users/alice/enable", None),
        ("GET", "/v1/projects", None),
        ("POST", "/v1/projects", {"id": "vision", "description": "CV"}),
        ("GET", "/v1/projects/vision", None),
        ("PUT", "/v1/projects/vision/members/alice", {"role": "admin"}),
        ("DELETE", "/v1/projects/vision/members/alice", None),
    ]


@pytest.mark.parametrize("make", [lambda c: c.create_token("laptop"), lambda c: c.create_user("alice"),
                                  lambda c: c.create_project("vision")])
def test_a_create_whose_answer_was_lost_is_not_sent_again(make):
    """A second token (or user, project) would be made, or a 409 hide the first one's secret."""
    calls = []

    def handler(request):
        calls.append(request)
        raise httpx.ReadTimeout("no answer", request=request)

    with pytest.raises(TransportError):
        make(client_with(handler))
    assert len(calls) == 1


def test_the_audit_log_is_read_with_its_filters_and_page_after_page():
    seen = []

    def handler(request):
        params = dict(request.url.params)
        seen.append(params)
        cursor = int(params.get("cursor", 7))
        items = [entry(s) for s in range(cursor, max(cursor - 3, 0), -1)]
        next_cursor = str(items[-1]["seq"] - 1) if items[-1]["seq"] > 1 else None
        return httpx.Response(200, json={"items": items, "next_cursor": next_cursor})

    c = client_with(handler)
    page = c.audit(user_id="alice", action="cancel_job", since="2026-11-01T00:00:00Z", limit=3)
    assert [e.seq for e in page.items] == [7, 6, 5] and page.next_cursor == "4"
    assert seen[0] == {"user_id": "alice", "action": "cancel_job", "since": "2026-11-01T00:00:00Z", "limit": "3"}
    assert [e.seq for e in c.iter_audit(project_id="vision")] == [7, 6, 5, 4, 3, 2, 1]
    assert [s.get("cursor") for s in seen[1:]] == [None, "4", "1"]
    assert all(s["project_id"] == "vision" for s in seen[1:])


def test_async_client_sends_the_same_teams_calls():
    sent = []

    def handler(request):
        sent.append((request.method, request.url.path))
        if request.url.path == "/v1/audit":
            return httpx.Response(200, json={"items": [entry(1)], "next_cursor": None})
        return answers(request)

    async def run() -> None:
        c = AsyncClient("http://vtp.test", token="t")
        c.http = httpx.AsyncClient(base_url="http://vtp.test", transport=httpx.MockTransport(handler))
        async with c:
            assert (await c.whoami()).user_id == "alice"
            assert (await c.create_token("laptop")).token == "vtp_secret"
            assert (await c.set_member("vision", "alice", "viewer")).id == "vision"
            assert [e.seq async for e in c.iter_audit(user_id="alice")] == [1]

    asyncio.run(run())
    assert sent == [("GET", "/v1/whoami"), ("POST", "/v1/tokens"), ("PUT", "/v1/projects/vision/members/alice"),
                    ("GET", "/v1/audit")]


def test_an_upload_names_its_project_only_when_given(tmp_path):
    archive = tmp_path / "shapes.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("images/a.txt", "x")
    bodies = []

    def handler(request):
        body = json.loads(request.content)
        bodies.append(body)  # content already known: nothing to send
        return httpx.Response(200, json={"dataset_id": body["dataset_id"], "version": body["sha256"],
                                         "state": "valid", "created": False})

    c = client_with(handler)
    assert c.upload_dataset(archive, "shapes", project_id="vision").state == "valid"
    c.upload_dataset(archive, "shapes")
    assert bodies[0]["project_id"] == "vision" and "project_id" not in bodies[1]

    async def run() -> None:
        a = AsyncClient("http://vtp.test", token="t")
        a.http = httpx.AsyncClient(base_url="http://vtp.test", transport=httpx.MockTransport(handler))
        async with a:
            await a.upload_dataset(archive, "shapes", project_id="vision")

    asyncio.run(run())
    assert bodies[2]["project_id"] == "vision"
