"""A finished job's model in MLflow: logged to its run, and registered when the job asked.

When a job SUCCEEDED with an MLflow run (the trainer reported `mlflow_run_id`), the controller
starts `publish_model` (a Ray task, retried if its worker dies): it logs the job's best checkpoint
as the run's model, a pyfunc model running the trainer's own `predict.py`
(ray_app/serving/mlflow_pyfunc.py), with the trainer's requirements, and with `register_as` set
registers it in the Model Registry as a new version tagged with the job. The outcome goes to the
job (`mlflow_model`: the model URI, the registered name and version, or the error) with an event.
Without an MLflow tracking URI, or a run, there is nothing to do.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path
from typing import Any

import ray

from ray_app.config import REPO_ROOT, Settings
from ray_app.jobs.job import Job
from ray_app.jobs.states import JobState
from ray_app.runtime.registry import TrainerManifest, TrainerRegistry
from ray_app.serving.trainer_files import fetch_checkpoint

log = logging.getLogger("ray_app.serving")
PYFUNC = Path(__file__).with_name("mlflow_pyfunc.py")
SDK_DIR = REPO_ROOT / "trainers" / "sdk"


def needs_model(settings: Settings, job: Job) -> bool:
    return bool(settings.mlflow_tracking_uri and job.state is JobState.SUCCEEDED and job.mlflow_run_id
                and job.mlflow_model is None)


def log_model(settings: Settings, manifest: TrainerManifest, job: Job) -> dict[str, Any]:
    """Log (and register) the job's model; the ModelInfo fields."""
    import mlflow

    from ray_app.serving.apps import checkpoint_of

    if not manifest.entrypoints.predict:
        return {"error": f"trainer {manifest.name!r} has no predict entrypoint to serve the model with"}
    if not settings.mlflow_tracking_uri:
        return {"error": "no MLflow tracking URI is set"}
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    with tempfile.TemporaryDirectory(prefix="vtp-model-") as tmp:
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
        )
        mlflow.MlflowClient(settings.mlflow_tracking_uri).log_artifacts(run_id, str(saved), "model")
    uri = f"runs:/{run_id}/model"
    model: dict[str, Any] = {"uri": uri}
    if job.register_as:
        version = mlflow.register_model(uri, job.register_as,
                                        tags={"vtp.job_id": job.id, "vtp.framework": job.framework})
        model.update(registered_name=version.name, registered_version=int(version.version))
    return model


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
