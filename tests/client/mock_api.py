"""A Client against a mocked API (httpx.MockTransport), for the client's unit tests."""

from __future__ import annotations

import httpx

from ray_app.client import Client


def client_with(handler) -> Client:
    """A Client whose requests `handler(request) -> httpx.Response` answers."""
    c = Client("http://vtp.test", token="secret-token")
    c.http = httpx.Client(base_url="http://vtp.test", headers=c._headers, transport=httpx.MockTransport(handler))
    return c
