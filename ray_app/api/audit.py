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
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ray_app.api.access import AuditNotes

log = logging.getLogger("ray_app.api.audit")

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
TRAINER_TAG = "callbacks"  # the callback router's tag (api/routes/callbacks.py)
MLFLOW_PREFIX = "/mlflow"


def entry(scope: Scope, notes: AuditNotes, status: int, request_id: str) -> dict[str, Any] | None:
    """The audit entry of a finished mutating request, or None when it is not one to record."""
    route = scope.get("route")
    path = scope.get("path", "")
    if route is not None:
        if TRAINER_TAG in (getattr(route, "tags", None) or []):
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
        request_id = uuid.uuid4().hex

        async def recorded(message: Message) -> None:
            if message["type"] == "http.response.start":
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
