"""The audit log's recorder: every mutating call (POST, PUT, PATCH, DELETE) a user makes, with how
it ended, appended to the database before its answer leaves (so whoever got an answer finds the
entry), and the answer's X-Request-ID naming it.

An entry is built from the matched route (its name is the action, its path with the ids), the
caller (user and token NAME, from api/access.py) and what the route's checks noted (resource and
project): never from the body or the query, so no value a user sent, and no secret, is in it.
Trainer callbacks are not user calls (their own events record them) and are left out; so are
requests no route matched. MLflow's server behind /mlflow is recorded as the action `mlflow`.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ray_app.api.access import AuditNotes
from ray_app.api.routes.callbacks import router as callback_router

log = logging.getLogger("ray_app.api.audit")

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# the callback router's tags (api/routes/callbacks.py: "trainer callbacks"), read from the router:
# a name copied here ("callbacks") matched no route, and every callback was recorded
TRAINER_TAGS = frozenset(callback_router.tags)
MLFLOW_PREFIX = "/mlflow"


def entry(scope: Scope, notes: AuditNotes, status: int, request_id: str) -> dict[str, Any] | None:
    """The audit entry of a finished mutating request, or None when it is not one to record."""
    route = scope.get("route")
    path = scope.get("path", "")
    if route is not None:
        if TRAINER_TAGS.intersection(getattr(route, "tags", None) or []):
            return None
        action = getattr(route, "name", None) or "unknown"
    elif path == MLFLOW_PREFIX or path.startswith(MLFLOW_PREFIX + "/"):
        action = "mlflow"
    else:
        return None
    if notes.trainer:
        return None
    principal = notes.principal
    return {"user_id": principal.user_id if principal else None,
            "token_name": principal.token_name if principal else None,
            "action": action[:64], "method": scope["method"], "path": path[:512],
            "resource": (notes.resource or "")[:300] or None, "project_id": notes.project_id,
            "outcome": status, "request_id": request_id}


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def request_id_of(scope: Scope) -> tuple[str, bool]:
    """The request's id, and whether this middleware must put it on the answer.

    Behind Ray Serve's proxy every request arrives with an X-Request-ID (the client's, or one the
    proxy made) which the proxy puts on the answer itself: the entry takes that id and no second
    header is added (both used to be sent: two different ids in one answer). Without
    Serve's proxy (the callback gateway, an app over ASGI in tests) an id the client sent is kept
    as well (its sender knows it); a request without one, or with one no entry can hold (at most
    64 of A-Z a-z 0-9 . _ : -), gets a new id, put on its answer."""
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":  # ASGI header names are lower case
            given = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(given):
                return given, False
            break
    return uuid.uuid4().hex, True


class AuditLog:
    """Pure ASGI (no BaseHTTPMiddleware: streams and uploads pass through untouched)."""

    def __init__(self, app: ASGIApp, ctx: Any):
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in MUTATING:
            await self.app(scope, receive, send)
            return
        notes = AuditNotes()
        scope.setdefault("state", {})["audit"] = notes
        request_id, echo = request_id_of(scope)

        async def recorded(message: Message) -> None:
            if message["type"] == "http.response.start":
                if echo:
                    message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                found = entry(scope, notes, message["status"], request_id)
                if found is not None:
                    try:
                        await self.ctx.store.append_audit([found])
                    except Exception:  # the call is done; its answer still goes out, the loss is logged
                        log.exception("audit entry of request %s (%s %s) not recorded", request_id,
                                      found["method"], found["path"])
            await send(message)

        await self.app(scope, receive, recorded)
