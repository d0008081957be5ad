"""The FastAPI application: routers, limits and error mapping. Built per Serve replica."""

from __future__ import annotations

import functools
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from starlette.exceptions import HTTPException as StarletteHTTPException

from ray_app import __version__
from ray_app.api.context import AppContext
from ray_app.api.limits import BodySizeLimit
from ray_app.api import access
from ray_app.api.audit import AuditLog
from ray_app.api.routes import (artifacts, audit, callbacks, datasets, exports, jobs, predict, queue, stream,
                                sweeps, system, teams)
from ray_app.config import Settings
from ray_app.console import server as console
from ray_app.jobs.errors import StoreError
from ray_app.jobs.types import readable
from ray_app.serving import mlflow_server
from ray_app.store.client import StoreClient

log = logging.getLogger("ray_app.api")
_UNPARSABLE = "There was an error parsing the body"  # FastAPI's words (fastapi/routing.py)
_UNPARSABLE_MSG = "the body is not valid JSON text (UTF-8)"


def create_app(settings: Settings, store: StoreClient | None = None,
               telemetry: dict[str, bool] | None = None) -> FastAPI:
    """`telemetry`: FastAPI's native OpenTelemetry settings (default: on when a provider is set)."""
    native: dict[str, Any] = {"telemetry": telemetry} if telemetry is not None else {}
    app = FastAPI(
        **native,
        title="Vision Training Platform",
        version=__version__,
        description="Training jobs for computer-vision models on Ray. Users call the job API "
        "with an API token; trainers call the callback API with their attempt's JWT.",
    )
    app.state.ctx = AppContext(settings=settings, store=store or StoreClient(settings))
    app.include_router(system.router)
    app.include_router(jobs.router)
    app.include_router(callbacks.router)
    app.include_router(predict.router)
    app.include_router(artifacts.router)
    app.include_router(exports.router)
    app.include_router(stream.router)
    app.include_router(stream.jobs_router)
    app.include_router(datasets.router)
    app.include_router(sweeps.router)
    app.include_router(queue.router)
    app.include_router(teams.router)
    app.include_router(audit.router)
    app.include_router(console.router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes,
                       max_upload_bytes=settings.max_upload_bytes)
    if mlflow_server.served(settings):
        # added last, so outermost: /mlflow is MLflow's own server behind the API token, where
        # artifacts (models) are uploaded, outside the JSON body limit
        app.add_middleware(mlflow_server.MlflowMount, settings=settings,
                           resolve=functools.partial(access.resolve, app.state.ctx))
    # outermost: every mutating call, /mlflow's too, is in the audit log before its answer leaves
    app.add_middleware(AuditLog, ctx=app.state.ctx)

    @app.exception_handler(StoreError)
    async def _store_error(_: Request, exc: StoreError) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content={"detail": exc.detail})

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer echoes each bad `input`: a NaN or a lone surrogate there made the
        # 422 itself fail (a 500), and echoing a request back can leak what a client sent by
        # mistake. The field (`loc`) and the reason (`msg`) are what a client needs.
        return JSONResponse(status_code=422, content={"detail": [
            {"type": e.get("type"), "loc": readable(list(e.get("loc", ()))), "msg": readable(e.get("msg", ""))}
            for e in exc.errors()]})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400:
            # only FastAPI and Starlette raise 400 here, when a body cannot be parsed (not UTF-8,
            # broken multipart): the same 422 as any other invalid body, naming the body
            msg = _UNPARSABLE_MSG if exc.detail == _UNPARSABLE else f"the body could not be parsed: {exc.detail}"
            return JSONResponse(status_code=422, content={"detail": [
                {"type": "body_unparsable", "loc": ["body"], "msg": readable(str(msg))}]})
        # a route's detail may name what the client sent (a sweep's space path, a key): made text a
        # UTF-8 answer can carry (a lone surrogate would fail the answer itself: a 500)
        exc.detail = readable(exc.detail)
        return await http_exception_handler(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # the traceback goes to the replica's log, never to the client
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"detail": "internal server error"})

    return app
