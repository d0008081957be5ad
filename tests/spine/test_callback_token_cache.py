"""The gateway's cache of verified callback tokens (api/deps.py) refuses what `verify` refuses."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
from fastapi import HTTPException
from fastapi.security import HTTPAuthorizationCredentials

from ray_app.api import deps
from ray_app.auth import callback_tokens

SECRET = "a-test-secret-for-callback-tokens-0123456789"


APP = SimpleNamespace(jwt_secret=SECRET, verified_tokens={})  # the parts of an AppContext used


def _check(job_id: str, token: str, app: SimpleNamespace = APP) -> callback_tokens.CallbackClaims:
    creds = HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)
    return asyncio.run(deps.require_callback(job_id, app, creds))


def _refused(job_id: str, token: str, app: SimpleNamespace = APP) -> str:
    with pytest.raises(HTTPException) as exc:
        _check(job_id, token, app)
    assert exc.value.status_code == 401
    return exc.value.detail


def test_cached_token_keeps_its_job_binding_and_attempt():
    token = callback_tokens.issue(SECRET, "job-a", 2, ttl_s=600)
    assert _check("job-a", token) == callback_tokens.CallbackClaims("job-a", 2)
    assert token in APP.verified_tokens
    assert _check("job-a", token) == callback_tokens.CallbackClaims("job-a", 2)  # from the cache
    assert "another job" in _refused("job-b", token)


def test_cached_token_is_refused_once_it_expires():
    token = callback_tokens.issue(SECRET, "job-c", 1, ttl_s=2)
    assert _check("job-c", token).attempt == 1
    time.sleep(max(0.0, APP.verified_tokens[token].expires_at - time.time()) + 0.05)
    assert "expired" in _refused("job-c", token)


def test_refused_tokens_are_not_cached():
    forged = callback_tokens.issue("another-secret-entirely-0123456789abcdef", "job-d", 1, ttl_s=600)
    assert "signature" in _refused("job-d", forged)
    assert forged not in APP.verified_tokens
    assert "missing" in _refused("job-d", "")


def test_a_token_verified_by_one_app_is_not_trusted_by_another():
    token = callback_tokens.issue(SECRET, "job-e", 1, ttl_s=600)
    assert _check("job-e", token).attempt == 1  # cached by APP
    other = SimpleNamespace(jwt_secret="the-other-platform-secret-0123456789abcdef", verified_tokens={})
    assert "signature" in _refused("job-e", token, other)
