"""The gateway's heartbeat fast path answers what the full FastAPI route answers, and only the
common case: every other request reaches the route, with its body intact.

In process, over ASGI, against a real JobStoreCore on SQLite (no Ray: the store client is
replaced by direct calls, the way the JobStore actor makes them)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from ray_app.api.fast_heartbeat import HeartbeatFastPath
from ray_app.api.gateway import create_callback_app
from ray_app.auth import callback_tokens
from ray_app.config import Settings
from ray_app.store.core import JobStoreCore
from tests.fixtures.local_store import local_client
from tests.spine.test_store_core import running_job

SECRET = "fast-path-test-secret-0123456789abcdef"




@pytest.fixture
def setup(tmp_path):
    core = JobStoreCore(f"sqlite:///{tmp_path / 'jobs.db'}")
    settings = Settings(data_dir=tmp_path, jwt_secret=SECRET, max_body_bytes=4096)
    app = create_callback_app(settings, store=local_client(core, settings))
    fast = HeartbeatFastPath(app, app.state.ctx)
    return core, app, fast


def _post(asgi, job_id: str, token: str | None, body=None, *, content: bytes | None = None,
          headers: dict | None = None) -> httpx.Response:
    async def go():
        h = {"Authorization": f"Bearer {token}"} if token else {}
        h.update(headers or {})
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://t") as client:
            return await client.post(f"/v1/jobs/{job_id}/heartbeat", json=body, content=content, headers=h)
    return asyncio.run(go())


def test_known_token_heartbeats_are_answered_by_the_fast_path_and_applied_once(setup):
    core, _app, fast = setup
    job_id = running_job(core)
    token = callback_tokens.issue(SECRET, job_id, 1, ttl_s=600)
    # the first request with a new token is verified by the full route, which caches it
    first = _post(fast, job_id, token, {"event_id": "hb-1", "epoch": 1, "metrics": {"loss": 0.9}})
    assert first.status_code == 200 and (fast.fast, fast.handed_over) == (0, 1)
    second = _post(fast, job_id, token, {"event_id": "hb-2", "epoch": 2, "metrics": {"loss": 0.5}})
    retried = _post(fast, job_id, token, {"event_id": "hb-2", "epoch": 2, "metrics": {"loss": 0.5}})
    assert (fast.fast, fast.handed_over) == (2, 1)
    assert second.json() == first.json() == {"status": "ok", "should_continue": True, "duplicate": False}
    assert retried.json()["duplicate"] is True
    assert second.headers["content-type"] == "application/json"
    assert [m["epoch"] for m in core.metrics(job_id)] == [1, 2]
    assert core.get_job(job_id)["epoch"] == 2

    core.request_cancel(job_id)  # the reply tells the trainer to stop
    assert _post(fast, job_id, token, {"epoch": 3}).json()["should_continue"] is False


def test_refusals_match_the_full_route(setup):
    core, app, fast = setup
    job_id = running_job(core)
    other = running_job(core)
    token = callback_tokens.issue(SECRET, job_id, 1, ttl_s=600)
    assert _post(fast, job_id, token, {"epoch": 1, "metrics": {"loss": 1.0}}).status_code == 200  # token cached

    cases = [  # (job, token, json body, raw content, extra headers): each against both apps
        (job_id, token, {"epoch": -1}, None, None),  # schema: 422 naming the field
        (job_id, token, {"epoch": 1, "surprise": 1}, None, None),  # unknown field
        (job_id, token, None, b"{not json", {"content-type": "application/json"}),
        (job_id, token, None, b'{"epoch": 1}', {"content-type": "text/plain"}),
        (job_id, token, None, b'{"epoch": 1, "metrics": {"x": "' + b"a" * 5000 + b'"}}',
         {"content-type": "application/json"}),  # over max_body_bytes: 413
        (job_id, token, {"epoch": 1, "attempt": 2}, None, None),  # body's attempt is not the token's
        (other, token, {"epoch": 1}, None, None),  # a cached token used for another job
        (job_id, "not-a-jwt", {"epoch": 1}, None, None),
        (job_id, None, {"epoch": 1}, None, None),
    ]
    for job, tok, body, content, headers in cases:
        via_fast = _post(fast, job, tok, body, content=content, headers=headers)
        via_route = _post(app, job, tok, body, content=content, headers=headers)
        assert via_fast.status_code == via_route.status_code >= 400, (body, content, via_fast.text)
        assert via_fast.json() == via_route.json()
    # only the body's-attempt refusal is the fast path's (the route's own check, shared); every
    # other case went to the full route
    assert (fast.fast, fast.handed_over) == (1, len(cases) - 1 + 1)
    statuses = [_post(fast, j, t, b, content=c, headers=h).status_code for j, t, b, c, h in cases]
    assert statuses == [422, 422, 422, 422, 413, 401, 401, 401, 401]
    assert [m["epoch"] for m in core.metrics(job_id)] == [1]  # nothing refused was applied
    assert core.get_job(other)["epoch"] is None

    # errors found by the store after the fast path took the request: the route's answers
    core.done(job_id, 1, {"status": "succeeded"})
    finished = _post(fast, job_id, token, {"epoch": 2})
    assert finished.status_code == 409 and finished.json()["should_continue"] is False
    assert "detail" in finished.json()
    stale = callback_tokens.issue(SECRET, other, 1, ttl_s=600)
    assert _post(fast, other, stale, {"epoch": 1}).status_code == 200
    core.requeue(other, 1, "node lost", "INFRA_ERROR")  # attempt 1 is no longer current
    refused = _post(fast, other, stale, {"epoch": 2})
    assert refused.status_code == 401 and refused.json() == _post(app, other, stale, {"epoch": 2}).json()
    assert fast.fast == 4


def test_an_expired_cached_token_is_handed_to_the_route(setup):
    core, _app, fast = setup
    job_id = running_job(core)
    token = callback_tokens.issue(SECRET, job_id, 1, ttl_s=2)
    assert _post(fast, job_id, token, {"epoch": 1}).status_code == 200
    time.sleep(max(0.0, fast.ctx.verified_tokens[token].expires_at - time.time()) + 0.05)
    expired = _post(fast, job_id, token, {"epoch": 2})
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]
    assert fast.fast == 0 and fast.handed_over == 2
