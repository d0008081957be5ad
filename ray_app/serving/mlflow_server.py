"""MLflow's tracking server, served by the platform's API at `/mlflow` (DESIGN §12: models leave
through the bucket).

When `VTP_MLFLOW_TRACKING_URI` names a database (the embedded default is
`sqlite:///$VTP_DATA_DIR/mlflow.db`; PostgreSQL and MySQL work alike), the platform serves MLflow
over it itself: MLflow's own server application (`mlflow.server.fastapi_app`, what `mlflow
server` runs) configured as

    mlflow server --backend-store-uri <that database> --default-artifact-root mlflow-artifacts:/ \
                  --serve-artifacts --artifacts-destination s3://<bucket>/mlflow

behind the API's bearer token. Every run's artifacts, and so every logged and registered model,
are then `mlflow-artifacts:/<experiment>/<run>/artifacts/...`, which the server proxies to the
platform's bucket: whoever holds the API URL and a token loads a registered model, from any
machine, with neither the bucket's keys nor the platform's disk (MLflow clients send
`MLFLOW_TRACKING_TOKEN` as `Authorization: Bearer`):

    MLFLOW_TRACKING_URI=http://<api>/mlflow MLFLOW_TRACKING_TOKEN=<API token> \
        python -c 'import mlflow; mlflow.pyfunc.load_model("models:/NAME/1")'

Trainers get the same URL with their attempt's callback token as MLFLOW_TRACKING_TOKEN (secret
environment), the model task a short-lived one of its own. Any valid callback token is accepted
here: a trainer already holds the bucket's keys, which reach every artifact anyway.

Why inside the API process rather than an `mlflow server` beside it: nothing more to start, stop,
bind or keep reachable; the token is checked where every other request's is; and trainers on any
node reach MLflow where they already call back. An http(s) tracking URI is an MLflow server of
yours, handed to trainers as it is (run it with `--serve-artifacts --artifacts-destination
s3://<bucket>/mlflow` for the same property).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import jwt

from ray_app.auth import api_tokens, callback_tokens
from ray_app.config import Settings

if TYPE_CHECKING:  # this module is imported where trainers' environments are built: kept light
    from starlette.types import ASGIApp, Receive, Scope, Send

PREFIX = "/mlflow"
ARTIFACTS_FOLDER = "mlflow"  # the bucket's folder of MLflow artifacts: s3://<bucket>/mlflow/<experiment>/...
ARTIFACT_ROOT = "mlflow-artifacts:/"
_DATABASES = {"sqlite", "postgresql", "postgres", "mysql", "mssql"}
# What MLflow's clients call for runs, the Model Registry and artifacts. MLflow's server also holds
# an AI gateway, webhooks, LLM jobs and an assistant, which call out of the platform or run work in
# it on a request's say: not served here.
SERVED = ("/api/2.0/mlflow/", "/api/2.0/mlflow-artifacts/", "/api/3.0/mlflow/server-info", "/health", "/version")
REFUSED = ("/api/2.0/mlflow/webhooks",)


def served(settings: Settings) -> bool:
    """The platform serves MLflow: its tracking URI names a database (SQLAlchemy URL)."""
    scheme = (settings.mlflow_tracking_uri or "").split(":", 1)[0]
    return scheme.split("+", 1)[0].lower() in _DATABASES


def api_url(settings: Settings) -> str:
    """The API's address as the platform's own processes reach it (trainers on any node)."""
    return (settings.public_base_url or f"http://{settings.http_host}:{settings.http_port}").rstrip("/")


def tracking_uri(settings: Settings) -> str | None:
    """The tracking URI trainers and the model task are given: the API's `/mlflow` when the
    platform serves MLflow, else the configured one."""
    return f"{api_url(settings)}{PREFIX}" if served(settings) else settings.mlflow_tracking_uri


def artifacts_destination(settings: Settings) -> str:
    return f"s3://{settings.s3_bucket}/{ARTIFACTS_FOLDER}"


def server_environment(settings: Settings) -> dict[str, str]:
    """MLflow's server settings, as `mlflow server` hands them to its workers (environment
    variables read by mlflow.server.handlers), and S3 as MLflow's S3 artifact repository reads it."""
    from ray_app.storage.s3 import settings_from

    s3 = settings_from(settings)
    env = {
        # mlflow.server.constants' names (importing that module would start the server's set-up)
        "_MLFLOW_SERVER_FILE_STORE": settings.mlflow_tracking_uri or "",
        "_MLFLOW_SERVER_ARTIFACT_ROOT": ARTIFACT_ROOT,
        "_MLFLOW_SERVER_SERVE_ARTIFACTS": "true",
        "_MLFLOW_SERVER_ARTIFACT_DESTINATION": artifacts_destination(settings),
        # MLflow's host and CORS checks protect a server anyone on the network may call; here
        # every request already carries the API's bearer token (which a browser never adds by
        # itself), and the Host is whatever name the operator serves the API under
        "MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE": s3.addressing_style,
        "AWS_DEFAULT_REGION": s3.region_name,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    if s3.endpoint_url:
        env["MLFLOW_S3_ENDPOINT_URL"] = s3.endpoint_url
    if s3.access_key and s3.secret_key:
        env.update(AWS_ACCESS_KEY_ID=s3.access_key, AWS_SECRET_ACCESS_KEY=s3.secret_key)
    return env


_build_lock = threading.Lock()


def build_server(settings: Settings) -> ASGIApp:
    """MLflow's server application for `settings`. Its configuration is process-wide (MLflow
    reads it from the environment), so a process serves one MLflow: the API replica's."""
    with _build_lock:
        os.environ.update(server_environment(settings))
        from mlflow.server.fastapi_app import app

        return app


def is_trainer(token: str, jwt_secret: str) -> bool:
    """A trainer's callback token (signed by the platform, unexpired, for any job)."""
    try:
        job_id = jwt.decode(token, options={"verify_signature": False}).get("sub")
        callback_tokens.verify(jwt_secret, token, str(job_id))
    except (jwt.InvalidTokenError, callback_tokens.CallbackAuthError):
        return False
    return True


def is_read(method: str, inner_path: str) -> bool:
    """A request that changes nothing in MLflow: GET and HEAD, and the POSTed searches."""
    return method in ("GET", "HEAD") or (method == "POST" and inner_path.rstrip("/").endswith("/search"))


# resolve(token) -> the user's Principal, or raises with a 401 reason (api/access.resolve)
Resolve = Callable[[str | None], Awaitable[Any]]


class MlflowMount:
    """ASGI middleware of the API: a request under `/mlflow` for one of MLflow's client APIs
    (SERVED) goes to MLflow's server once its token passed (outside the API's JSON body limit:
    artifacts are uploaded there), any other request to the API. MLflow's application is built on
    the first such request, in a thread (importing it takes seconds), and sees itself at the root.

    Who may: trainers (their callback token) and platform admins everything; any other signed-in
    user reads (runs, metrics, registered models and their files: a model loads on a laptop), and
    writes nothing (a job registers its model through `register_as`). MLflow's own records have no
    projects: per-project visibility of runs is not enforced here (issue 29's note)."""

    def __init__(self, app: ASGIApp, settings: Settings, resolve: Resolve) -> None:
        self.app = app
        self.settings = settings
        self.resolve = resolve
        self._server: ASGIApp | None = None
        self._jwt_secret: str | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        if self._jwt_secret is None:
            self._jwt_secret = self.settings.resolved_jwt_secret()
        headers = dict(scope.get("headers", []))
        token = api_tokens.bearer_token(headers.get(b"authorization", b"").decode("latin-1"))
        notes = scope.get("state", {}).get("audit")
        inner_path = path[len(PREFIX):] or "/"
        if token and is_trainer(token, self._jwt_secret):
            if notes is not None:
                notes.trainer = True
        else:
            from starlette.exceptions import HTTPException  # the API's process only: trainers import this module

            try:
                principal = await self.resolve(token)
            except HTTPException as exc:  # the API's 401, with its reason (revoked, expired, disabled...)
                await _reply(send, 401, f"{exc.detail}: MLflow clients send MLFLOW_TRACKING_TOKEN (an API token) as "
                                        "Authorization: Bearer", [(b"www-authenticate", b"Bearer")])
                return
            if notes is not None:
                notes.principal = principal
            if not principal.platform_admin and not is_read(scope["method"], inner_path):
                await _reply(send, 403, "the platform's MLflow is read-only for users: trainers log runs, and a job "
                                        "registers its model (register_as); platform admins may write")
                return
        if not inner_path.startswith(SERVED) or inner_path.startswith(REFUSED):
            await _reply(send, 404, "not served: the platform's MLflow serves its tracking, Model Registry and "
                                    f"artifact APIs ({PREFIX}/api/2.0/mlflow/..., {PREFIX}/api/2.0/mlflow-artifacts/...)")
            return
        if self._server is None:
            self._server = await asyncio.to_thread(build_server, self.settings)
        raw = scope.get("raw_path") or path.encode()
        inner = {**scope, "path": inner_path, "raw_path": raw[len(PREFIX):] or b"/", "root_path": ""}
        await self._server(inner, receive, send)


async def _reply(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def client_token(settings: Settings, job_id: str, attempt: int, ttl_s: int) -> str:
    """A token the platform's own MLflow calls for a job carry (its callback token's kind)."""
    return callback_tokens.issue(settings.resolved_jwt_secret(), job_id, attempt, ttl_s)
