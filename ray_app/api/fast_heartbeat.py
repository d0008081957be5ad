"""The callback gateway's fast path for the one high-rate request: a heartbeat with a known token.

Heartbeats are nearly all of the gateway's traffic (one per job every few seconds). Through
FastAPI each costs ~0.4 ms of CPU in routing, dependency solving and five middleware layers, more
than the heartbeat's own work (py-spy, bench/README.md, ingestion). `HeartbeatFastPath` answers
`POST /v1/jobs/{job_id}/heartbeat` itself when every check passes on the common case:

  - a `Bearer` token this app has already verified (`AppContext.verified_tokens`, filled by the
    full route's `require_callback`), still unexpired and bound to this job;
  - a JSON body within the size limit that validates as `HeartbeatIn` (the same schema);

and then does exactly what the route does (`callbacks.heartbeat_reply`: the same store call, the
same replies and error bodies). Anything else (the first request with a new token, a bad or
expired token, a malformed or oversized body, any other route) goes to the full FastAPI app
unchanged, with the body replayed, so every refusal keeps the status and message of the
documented route. Nothing is applied before that decision, so a handed-over request is applied
at most once, by the full app.
"""

from __future__ import annotations

import json
import logging
import re

from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ray_app.api.context import AppContext
from ray_app.api.deps import cached_claims
from ray_app.api.routes.callbacks import heartbeat_reply, json_bytes
from ray_app.jobs.errors import StoreError
from ray_app.jobs.callback_models import HeartbeatIn

log = logging.getLogger("ray_app.api.gateway")

_HEARTBEAT_PATH = re.compile(r"/v1/jobs/([^/]+)/heartbeat")  # the route's {job_id}: one segment
_JSON_HEADERS = [(b"content-type", b"application/json")]


class HeartbeatFastPath:
    def __init__(self, app: ASGIApp, ctx: AppContext):
        self.app = app
        self.ctx = ctx
        self.max_bytes = ctx.settings.max_body_bytes
        self.fast = 0  # answered here (tests and the ingestion benchmark read it)
        self.handed_over = 0  # heartbeats passed to the full app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = (_HEARTBEAT_PATH.fullmatch(scope["path"])
                 if scope["type"] == "http" and scope["method"] == "POST" else None)
        if match is None:
            await self.app(scope, receive, send)
            return
        job_id = match.group(1)
        claims, length = self._known_token_and_length(scope, job_id)
        if claims is None or length is None or length > self.max_bytes:
            return await self._hand_over(scope, receive, send, None)
        raw = b""
        while True:  # at most Content-Length bytes: the HTTP parser enforces it
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            raw += message.get("body", b"")
            if not message.get("more_body", False):
                break
        try:
            body = HeartbeatIn.model_validate(json.loads(raw))  # as FastAPI does: json, then python mode
        except (ValueError, ValidationError):  # JSONDecodeError is a ValueError
            return await self._hand_over(scope, receive, send, raw)
        try:
            status, content = await heartbeat_reply(self.ctx, job_id, claims, body)
        except StoreError as exc:  # what the app's StoreError handler answers
            status, content = exc.status_code, json_bytes({"detail": exc.detail})
        except Exception:
            log.exception("unhandled error on POST %s", scope["path"])
            status, content = 500, json_bytes({"detail": "internal server error"})
        self.fast += 1
        await send({"type": "http.response.start", "status": status,
                    "headers": [*_JSON_HEADERS, (b"content-length", str(len(content)).encode())]})
        await send({"type": "http.response.body", "body": content})

    def _known_token_and_length(self, scope: Scope, job_id: str):
        token = length = content_type = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.decode("latin-1").partition(" ")
                token = credentials if scheme.lower() == "bearer" else None
            elif name == b"content-length":
                length = int(value) if value.isdigit() else None
            elif name == b"content-type":
                content_type = value
        if content_type is None or not content_type.startswith(b"application/json"):
            return None, None
        claims = cached_claims(self.ctx, token, job_id)  # the rule require_callback applies
        return (claims, length) if claims is not None else (None, None)

    async def _hand_over(self, scope: Scope, receive: Receive, send: Send, consumed: bytes | None) -> None:
        """The full app, with the body already read (None: nothing read) given back to it first.
        An empty body that was read is given back too: the request's only message is gone, and
        the app would otherwise wait for it until the client gave up."""
        self.handed_over += 1
        if consumed is None:
            await self.app(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": consumed, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
