"""Which model serves a job, and the Serve application that serves it.

One Serve application per trainer, `vtp-predict-<trainer>` (its deployment `ModelServer` in the
trainer's runtime_env; no HTTP route: the API calls it through a handle). The API deploys it on
the first prediction for that trainer, and again only when its configuration changed: each
replica knows the fingerprint of the configuration it was made with (Serve manages deployment
versions itself and restarts replicas on every deploy), so an API replica that finds the server
already running as configured uses it, models and all. Replicas, their CPUs and GPUs, autoscaling
and the models kept per replica are settings (`VTP_PREDICT_*`, README "Settings").
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

from ray import serve

from ray_app.config import Settings
from ray_app.jobs.job import Job
from ray_app.jobs.states import JobState
from ray_app.runtime import contract_env, runtime_env
from ray_app.runtime.registry import TrainerManifest
from ray_app.serving.model_server import ModelServer

APP_PREFIX = "vtp-predict-"
CHECKPOINT_PREFERENCE = ("best", "best_checkpoint", "last", "last_checkpoint")


class PredictUnavailable(Exception):
    """The job cannot serve predictions (not finished, no checkpoint, no predict entrypoint)."""


def checkpoint_of(job: Job) -> str:
    artifacts = job.artifacts or {}
    for name in CHECKPOINT_PREFERENCE:
        if artifacts.get(name):
            return artifacts[name]
    raise PredictUnavailable(f"job {job.id} reported no checkpoint (artifacts: {sorted(artifacts)})")


def model_id(manifest: TrainerManifest, job: Job) -> str:
    """The multiplexed model id of a job's best checkpoint, or PredictUnavailable saying why."""
    if not manifest.entrypoints.predict:
        raise PredictUnavailable(f"trainer {manifest.name!r} has no predict entrypoint")
    if job.state is not JobState.SUCCEEDED:
        raise PredictUnavailable(f"job {job.id} is {job.state.value}; predictions need a SUCCEEDED job")
    return f"{job.id}|{checkpoint_of(job)}"


def app_name(trainer: str) -> str:
    return f"{APP_PREFIX}{trainer}"


def _storage_env(settings: Settings) -> contract_env.ContractEnv:
    """The environment a model server needs: offline switches and S3's endpoint in public, its
    keys as a secret (no job: the contract's per-job variables do not apply)."""
    env = contract_env.storage(settings)
    return contract_env.ContractEnv(public={**contract_env.OFFLINE_ENV, **env.public}, secret=env.secret)


def deployment_options(settings: Settings, manifest: TrainerManifest, renv: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {
        "name": "ModelServer",
        "ray_actor_options": {"runtime_env": renv, "num_cpus": settings.predict_num_cpus,
                              "num_gpus": settings.predict_num_gpus},
        # requests wait in the replica while a model loads; inference itself runs one at a time
        "max_ongoing_requests": 16,
    }
    if settings.predict_max_replicas > max(settings.predict_min_replicas, 1):
        options["autoscaling_config"] = {"min_replicas": settings.predict_min_replicas,
                                         "max_replicas": settings.predict_max_replicas}
    else:
        options["num_replicas"] = max(settings.predict_min_replicas, 1)
    return options


_lock = threading.Lock()
_handles: dict[str, Any] = {}  # application -> its handle, once this process deployed or found it


def model_server(settings: Settings, manifest: TrainerManifest) -> Any:
    """A handle to the trainer's model server, deployed (and waited for) the first time this
    process asks for it unless it already runs with this configuration. Later calls return the
    handle at once: preparing the runtime_env (hashing the trainer's folder, finding its venv)
    costs tens of milliseconds, too much for every prediction, and neither the settings nor the
    registry's manifests change within an API replica (edits to a trainer's files reach its model
    server when the API is deployed again). Blocking the first time: call it from a thread."""
    name = app_name(manifest.name)
    handle = _handles.get(name)
    if handle is not None:
        return handle
    with _lock:
        if name not in _handles:
            env = _storage_env(settings)
            renv = runtime_env.prepare(settings, manifest, env.public)
            options = deployment_options(settings, manifest, renv)
            args = (manifest.entrypoints.predict, settings.predict_models_per_replica)
            version = hashlib.sha256(json.dumps([options, args, sorted(env.secret.items())], sort_keys=True,
                                                default=str).encode()).hexdigest()[:16]
            if _running_version(name) != version:
                app = ModelServer.options(**options).bind(*args, env.secret, version)  # type: ignore[attr-defined]
                serve.run(app, name=name, route_prefix=None)
            _handles[name] = serve.get_app_handle(name)
        return _handles[name]


def _running_version(name: str) -> str | None:
    """The configuration fingerprint of the running server, or None when there is none."""
    status = serve.status().applications.get(name)
    if status is None or status.status != "RUNNING":
        return None
    try:
        return serve.get_app_handle(name).version.remote().result(timeout_s=30)
    except Exception:  # an older server without the method, or one going away: deploy anew
        return None
