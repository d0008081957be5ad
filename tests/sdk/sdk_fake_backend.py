"""The platform's callback API in miniature, for the SDK tests: a real HTTP server (FastAPI
under uvicorn on loopback) implementing the callback contract with idempotency.

Every body it receives is validated with the platform's own models (ray_app/jobs/callback_models.py)
and refused with 422 as the platform would refuse it; the refusals are recorded (`invalid`), and
the SDK tests' fixture fails a test whose SDK sent one (tests/sdk/conftest.py)."""
from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from tests.fixtures.s3 import TRAINERS_DIR  # noqa: F401  (puts the SDK on sys.path)
from ray_app.jobs.callback_models import BODY_MODELS
from ray_app.jobs.types import readable
from ray_app.storage import free_port


def refusal(model: type[BaseModel], body: Any) -> dict[str, Any] | None:
    """The platform's 422 body for ``body`` (ray_app/api/app.py: loc and msg, no input), or None
    when the platform's model accepts it."""
    try:
        model.model_validate(body)
    except ValidationError as exc:
        return {"detail": [{"type": e.get("type"), "loc": readable(["body", *e.get("loc", ())]),
                            "msg": readable(e.get("msg", ""))} for e in exc.errors()]}
    return None

TOKEN = "test-callback-token-123456"


class FakeBackend:
    """The platform's callback API in miniature, validating as the platform does. ``mode``: up | down (503) | slow (hang, then
    503) | lost_reply (apply, then answer 503 as if the reply was lost). ``delay``: seconds
    every request takes before it is handled (a slow but working backend). ``batch``: whether it
    has the batch route (an older platform does not)."""

    instances: list["FakeBackend"] = []  # every one made, for the SDK tests' validity check

    def __init__(self, batch: bool = True, batch_done: bool = True) -> None:
        FakeBackend.instances.append(self)
        self.invalid: list[tuple[str, Any, dict[str, Any]]] = []  # (route, body, 422 detail)
        self.batch = batch  # serve POST .../callbacks (queued callbacks in one request)
        self.batch_done = batch_done  # ... and take `done` as its last item (else 422, as before)
        self.batched_done = 0  # dones that came in a batch
        self.mode = "up"
        self.delay = 0.0
        self.should_continue = True
        self.terminal = False
        self.applied: dict[str, list[dict[str, Any]]] = {"heartbeat": [], "event": [], "done": []}
        self.seen_ids: set[str] = set()
        self.requests: Counter[str] = Counter()
        self.duplicates = 0
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = self._build()

    def _build(self) -> FastAPI:
        app = FastAPI()

        async def admit(kind: str, request: Request) -> JSONResponse | None:
            """The request-level part: counting, delay, token, outages."""
            self.requests[kind] += 1
            if self.delay:
                await asyncio.sleep(self.delay)
            if request.headers.get("authorization") != f"Bearer {TOKEN}":
                return JSONResponse({"detail": "invalid callback token"}, status_code=401)
            if self.mode == "down":
                return JSONResponse({"detail": "unavailable"}, status_code=503)
            if self.mode == "slow":
                await asyncio.sleep(1.0)
                return JSONResponse({"detail": "unavailable"}, status_code=503)
            return None

        def apply(kind: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            """One callback, as the platform applies it: idempotent by event_id."""
            if kind == "heartbeat" and self.terminal:
                return 409, {"status": "terminal", "should_continue": False}
            duplicate = body["event_id"] in self.seen_ids
            if kind == "done" and self.applied["done"] and not duplicate:
                return 409, {"detail": "a different done was already accepted"}
            if duplicate:
                self.duplicates += 1
            else:
                self.seen_ids.add(body["event_id"])
                self.applied[kind].append(body)
            reply: dict[str, Any] = {"status": "ok", "duplicate": duplicate}
            if kind == "heartbeat":
                reply["should_continue"] = self.should_continue
            return 200, reply

        if self.batch:
            @app.post("/v1/jobs/{job_id}/callbacks")
            async def batch(job_id: str, request: Request) -> JSONResponse:
                refused = await admit("callbacks", request)
                if refused is not None:
                    return refused
                results = []
                body = await request.json()
                items = body.get("items") if isinstance(body, dict) else None
                if isinstance(items, list) and any(isinstance(i, dict) and i.get("kind") == "done" for i in items):
                    if not self.batch_done:  # an older platform: done is not a batch item there
                        return JSONResponse({"detail": [{"loc": ["body", "items"], "msg": "bad kind"}]},
                                            status_code=422)
                refused = self.validate("callbacks", body)
                if refused is not None:
                    return refused
                if items[-1]["kind"] == "done":
                    self.batched_done += 1
                for item in items:
                    status, reply = apply(item["kind"], item["body"])
                    results.append({"status": status, "reply": reply if status == 200 else None,
                                    "detail": None if status == 200 else reply.get("detail", "refused")})
                if self.mode == "lost_reply":
                    return JSONResponse({"detail": "reply lost"}, status_code=503)
                return JSONResponse({"results": results, "should_continue": self.should_continue})

        @app.post("/v1/jobs/{job_id}/{kind}")
        async def callback(job_id: str, kind: str, request: Request) -> JSONResponse:
            if kind not in self.applied:  # e.g. .../callbacks on a backend without that route
                self.requests[kind] += 1
                return JSONResponse({"detail": "Not Found"}, status_code=404)
            refused = await admit(kind, request)
            if refused is not None:
                return refused
            body = await request.json()
            refused = self.validate(kind, body)
            if refused is not None:
                return refused
            status, reply = apply(kind, body)
            if self.mode == "lost_reply":
                return JSONResponse({"detail": "reply lost"}, status_code=503)
            return JSONResponse(reply, status_code=status)

        return app

    def validate(self, route: str, body: Any) -> JSONResponse | None:
        """None when the platform's model for the route accepts the body; else its 422."""
        detail = refusal(BODY_MODELS[route], body)
        if detail is None:
            return None
        self.invalid.append((route, body, detail))
        return JSONResponse(detail, status_code=422)

    def start(self) -> None:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="error",
                                lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "fake backend did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        """Close the port (connection refused from now on)."""
        if self._server:
            self._server.should_exit = True
            self._thread.join(10)
            self._server = None


def sdk_env(backend: FakeBackend, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "JOB_ID": "job42", "TRACE_ID": "trace-42", "PROJECT_ID": "p1", "ATTEMPT": "2",
        "BACKEND_BASE_URL": backend.base_url, "CALLBACK_TOKEN": TOKEN, "EPOCHS": "10",
        "TMP_DIR": str(tmp_path / "tmp"), "WORK_DIR": str(tmp_path / "work"),
        "VTP_CALLBACK_BACKOFF_BASE_S": "0.02", "VTP_CALLBACK_BACKOFF_MAX_S": "0.2",
        "VTP_DONE_TIMEOUT_S": "3", "VTP_CALLBACK_FLUSH_TIMEOUT_S": "10", **extra,
    }


def wait_for(pred, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()
