"""The client's tests against a mocked API (tests/client/mock_api.py): no waiting between retries."""

from __future__ import annotations

import pytest

from ray_app.client import _retry


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(_retry, "wait_exponential_jitter", lambda **_: (lambda state: 0))
