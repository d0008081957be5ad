"""A finished job's model in MLflow: logged to its run, and registered when the job asked.

When a job SUCCEEDED with an MLflow run (the trainer reported `mlflow_run_id`), the controller
starts `publish_model` (a Ray task, retried if its worker dies): it logs the job's best checkpoint
as the run's model, a pyfunc model running the trainer's own `predict.py`
(ray_app/serving/mlflow_pyfunc.py), with the trainer's requirements, and with `register_as` set
registers it in the Model Registry as a new version tagged with the job. The outcome goes to the
job (`mlflow_model`: the model URI, the registered name and version, or the error) with an event.
Without an MLflow tracking URI, or a run, there is nothing to do.

The model carries what loading it needs and nothing of the platform: a signature whose params are
the predict contract's options (`conf`, `top_k`: MLflow passes on only the params a signature
declares), the trainer's own requirements, and no uv project files (MLflow would otherwise copy
the platform's uv.lock and pyproject.toml from the working directory). Its files go where every
run's do: through the platform's MLflow server into the bucket (ray_app/serving/mlflow_server.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray

from ray_app.config import REPO_ROOT, Settings
from ray_app.jobs.job import Job
from ray_app.jobs.states import JobState
from ray_app.runtime.registry import TrainerManifest, TrainerRegistry
from ray_app.serving import mlflow_server
from ray_app.serving.trainer_files import fetch_checkpoint

log = logging.getLogger("ray_app.serving")
PYFUNC = Path(__file__).with_name("mlflow_pyfunc.py")
SDK_DIR = REPO_ROOT / "trainers" / "sdk"
# the options of the predict contract (trainers' predict.py, the API's POST /v1/jobs/{id}/predict),
# with the API's defaults
PARAMS = (("conf", "double", 0.25), ("top_k", "long", 5))
TOKEN_TTL_S = 3600  # the model task's own token for the platform's MLflow server


def needs_model(settings: Settings, job: Job) -> bool:
    return bool(settings.mlflow_tracking_uri and job.state is JobState.SUCCEEDED and job.mlflow_run_id
                and job.mlflow_model is None)


def log_model(settings: Settings, manifest: TrainerManifest, job: Job) -> dict[str, Any]:
    """Log (and register) the job's model; the ModelInfo fields."""
    import mlflow

    from ray_app.serving.apps import checkpoint_of

    if not manifest.entrypoints.predict:
        return {"error": f"trainer {manifest.name!r} has no predict entrypoint to serve the model with"}
    tracking_uri = mlflow_server.tracking_uri(settings)
    if not tracking_uri:
        return {"error": "no MLflow tracking URI is set"}
    with _tracking_token(settings, job), tempfile.TemporaryDirectory(prefix="vtp-model-") as tmp:
        mlflow.set_tracking_uri(tracking_uri)
        from ray_app.datasets.uploads import Storage

        checkpoint = fetch_checkpoint(Storage(settings).client, checkpoint_of(job), Path(tmp))
        # Saved here and added to the run's artifacts: the run stays FINISHED as the trainer left
        # it (logging through `start_run(run_id=...)` would make it RUNNING again meanwhile, and
        # leave it so if this task died half-way).
        saved, run_id = Path(tmp) / "model", str(job.mlflow_run_id)
        mlflow.pyfunc.save_model(
            str(saved), python_model=str(PYFUNC), mlflow_model=mlflow.models.Model(run_id=run_id),
            artifacts={"checkpoint": str(checkpoint), "trainer": str(manifest.folder)},
            model_config={"predict": manifest.entrypoints.predict, "device": "cpu"},
            code_paths=[str(SDK_DIR)] if SDK_DIR.is_dir() else None,
            pip_requirements=manifest.requirement_lines(),
            signature=signature(),
            # the model's project is the trainer's folder (its uv files if it has any), not the
            # working directory of this task, which may be the platform's checkout
            uv_project_path=str(manifest.folder),
        )
        mlflow.MlflowClient(tracking_uri).log_artifacts(run_id, str(saved), "model")
        uri = f"runs:/{run_id}/model"
        model: dict[str, Any] = {"uri": uri}
        if job.register_as:
            version = mlflow.register_model(uri, job.register_as,
                                            tags={"vtp.job_id": job.id, "vtp.framework": job.framework})
            model.update(registered_name=version.name, registered_version=int(version.version))
    return model


def signature() -> Any:
    """Any input (image paths); the predict contract's options as params."""
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec

    return ModelSignature(inputs=None, params=ParamSchema([ParamSpec(n, t, d) for n, t, d in PARAMS]))


@contextlib.contextmanager
def _tracking_token(settings: Settings, job: Job) -> Iterator[None]:
    """While the model is logged: a short-lived token for this job."""
    with tracking_token(settings, job.id, int(job.attempt)):
        yield


@contextlib.contextmanager
def tracking_token(settings: Settings, subject: str, attempt: int = 1) -> Iterator[None]:
    """While the platform itself calls MLflow (a job's model, a sweep's runs): the token MLflow's
    client sends to the platform's MLflow server (MLFLOW_TRACKING_TOKEN, read from the
    environment), a short-lived one of the callback kind for `subject`."""
    if not mlflow_server.served(settings):
        yield
        return
    before = os.environ.get("MLFLOW_TRACKING_TOKEN")
    os.environ["MLFLOW_TRACKING_TOKEN"] = mlflow_server.client_token(settings, subject, attempt, TOKEN_TTL_S)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
        else:
            os.environ["MLFLOW_TRACKING_TOKEN"] = before


def _publish(settings: Settings, job_id: str) -> None:
    from ray_app.store.client import StoreClient

    store = StoreClient(settings)
    job = asyncio.run(store.get_job(job_id))
    if not needs_model(settings, job):
        return
    try:
        model = log_model(settings, TrainerRegistry(settings.trainer_paths).get(job.framework), job)
    except Exception as exc:  # recorded on the job: the job itself succeeded either way
        log.exception("[TRACE:%s] could not log the model of job %s", job.trace_id, job_id)
        model = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
    asyncio.run(store.model_published(job_id, model))


publish_model = ray.remote(num_cpus=0, max_retries=2)(_publish)
