"""A sweep in MLflow: a parent run per sweep, its trials' runs as its children, the best trial's
model registered when the sweep asked (`register_best_as`).

The trials' runs are the trainers' own (experiment `project-<project>`, run `job-<id>`); the
platform makes them children afterwards by tagging them (`mlflow.parentRunId`, which is how
MLflow nests runs), so the trainer contract does not change. Every call here is best-effort:
MLflow unreachable is logged, never a failed sweep.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ray_app.config import Settings
from ray_app.jobs.job import Job
from ray_app.serving import mlflow_server
from ray_app.serving.mlflow_models import tracking_token
from ray_app.sweeps.trial import reader_of

log = logging.getLogger("ray_app.sweeps")
MODEL_WAIT_S = 120.0  # how long the registration waits for the best job's model to be logged


def _client(settings: Settings) -> Any:
    import mlflow

    return mlflow.MlflowClient(mlflow_server.tracking_uri(settings))


def parent_run(settings: Settings, sweep: dict[str, Any]) -> str | None:
    """The sweep's run (made once: a restarted driver finds it on the record)."""
    if sweep.get("mlflow_parent_run_id"):
        return str(sweep["mlflow_parent_run_id"])
    try:
        with tracking_token(settings, f"sweep-{sweep['id']}"):
            client = _client(settings)
            name = f"project-{sweep['project_id']}"
            experiment = client.get_experiment_by_name(name)
            experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
            spec = sweep["spec"]
            run = client.create_run(experiment_id, run_name=f"sweep-{sweep['id']}", tags={
                "vtp.sweep_id": sweep["id"], "vtp.sweep_name": sweep["name"], "vtp.kind": "sweep",
                "vtp.metric": spec["metric"], "vtp.mode": spec["mode"], "vtp.search": spec["search"]})
            return str(run.info.run_id)
    except Exception as exc:
        log.warning("sweep %s: no MLflow parent run: %s", sweep["id"], exc)
        return None


def tag_trials(settings: Settings, sweep: dict[str, Any]) -> None:
    """Every trial's run becomes a child of the sweep's, tagged with its trial and status; the
    parent gets the best trial and ends."""
    parent = sweep.get("mlflow_parent_run_id")
    if not parent:
        return
    reader = reader_of(settings.resolved_database_url)
    try:
        with tracking_token(settings, f"sweep-{sweep['id']}"):
            client = _client(settings)
            for trial in sweep["trials"]:
                run_id = reader.get_job(trial["job_id"])["mlflow_run_id"]
                if not run_id:
                    continue
                for key, value in (("mlflow.parentRunId", parent), ("vtp.sweep_id", sweep["id"]),
                                   ("vtp.trial", str(trial["trial"])), ("vtp.trial_status", trial["status"])):
                    client.set_tag(run_id, key, value)
            best = sweep.get("best")
            if best:
                client.set_tag(parent, "vtp.best_job_id", best["job_id"])
                if isinstance(best.get("best_metric"), int | float):
                    client.log_metric(parent, f"best_{sweep['spec']['metric']}", float(best["best_metric"]))
            client.set_terminated(parent)
    except Exception as exc:
        log.warning("sweep %s: trials' MLflow runs not grouped: %s", sweep["id"], exc)


def register_best(settings: Settings, sweep: dict[str, Any], job_id: str) -> dict[str, Any]:
    """The best trial's model (logged by the controller once its job succeeded,
    serving/mlflow_models.py) as a new version of `register_best_as`; the ModelInfo fields."""
    import mlflow

    name = sweep["spec"]["register_best_as"]
    reader = reader_of(settings.resolved_database_url)
    deadline = time.monotonic() + MODEL_WAIT_S
    job = Job.model_validate(reader.get_job(job_id))
    while (job.mlflow_model is None or not job.mlflow_model.uri) and time.monotonic() < deadline:
        if job.mlflow_model is not None and job.mlflow_model.error:
            return {"error": f"the best trial's model was not logged: {job.mlflow_model.error}"}
        time.sleep(1.0)
        job = Job.model_validate(reader.get_job(job_id))
    if job.mlflow_model is None or not job.mlflow_model.uri:
        return {"error": f"the best trial's model (job {job_id}) was not logged to MLflow"}
    uri = mlflow_server.tracking_uri(settings)
    if not uri:
        return {"error": "no MLflow tracking URI is set"}
    try:
        with tracking_token(settings, f"sweep-{sweep['id']}"):
            mlflow.set_tracking_uri(uri)
            version = mlflow.register_model(job.mlflow_model.uri, name, tags={
                "vtp.sweep_id": sweep["id"], "vtp.job_id": job_id})
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:2000]}
    return {"uri": job.mlflow_model.uri, "registered_name": version.name,
            "registered_version": int(version.version)}
