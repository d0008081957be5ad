"""An SDK-only trainer through the platform; the controller surviving its own restart; a trainer
whose environment cannot be built; the pip/uv ways of giving a trainer its dependencies."""

from __future__ import annotations

import time

import mlflow
import ray

from ray_app.config import CONTROLLER_ACTOR, NAMESPACE, Settings
from ray_app.datasets import make_classification
from ray_app.runtime import runtime_env
from ray_app.runtime.controller import ensure_controller
from ray_app.runtime.registry import TrainerRegistry
from ray_app.storage import object_exists
from ray_app.storage.s3 import upload_dataset
from tests.fixtures.platform import TEST_TRAINERS


def test_sdk_trainer_reports_validation_checkpoint_and_mlflow_run(platform, s3_server, tmp_path):
    p = platform
    make_classification(tmp_path / "ds", n_images=12, size=32, seed=5)
    upload_dataset(s3_server.client(), s3_server.bucket, "sdkloop-ds", tmp_path / "ds")
    job = p.create_job(framework="sdkloop", model_name="toy", task_type="image_classification",
                       dataset_id="sdkloop-ds", epochs=3, project_id="sdk-proj")
    job = p.wait_state(job["id"], "SUCCEEDED", timeout=180)
    kinds = [e["event_type"] for e in p.events(job["id"]) if e["source"] == "trainer"]
    for kind in ("started", "dataset_loaded", "validation_complete", "checkpoint_saved", "done"):
        assert kind in kinds, kinds
    assert kinds.count("validation_complete") == 3
    uri = f"s3://{s3_server.bucket}/checkpoints/job-{job['id']}/last.pt"
    assert job["artifacts"]["last"] == uri and object_exists(s3_server.client(), uri)
    assert [m["epoch"] for m in p.api("GET", f"/v1/jobs/{job['id']}/metrics").json()["items"]] == [1, 2, 3]
    # the MLflow run: experiment project-<project>, run job-<id>, params, metrics, the checkpoint
    p.mlflow()  # the platform's MLflow server, whose artifacts are in the bucket
    run = mlflow.get_run(job["mlflow_run_id"])
    assert run.info.run_name == f"job-{job['id']}"
    assert mlflow.get_experiment(run.info.experiment_id).name == "project-sdk-proj"
    assert run.data.params["epochs"] == "3" and run.data.metrics["accuracy"] == 0.75
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)]
    assert "last.pt" in artifacts
    assert not any(s3_server.secret_key in str(v) for v in run.data.params.values())


def test_controller_restart_reattaches_to_running_attempt(platform):
    p = platform
    job_id = p.create_job(framework="fake", model_name="fake-restart", task_type="image_classification",
                          epochs=8, config={"behaviour": "succeed", "epoch_seconds": 0.5})["id"]
    p.wait_state(job_id, "RUNNING", timeout=60)
    ray.kill(ray.get_actor(CONTROLLER_ACTOR, namespace=NAMESPACE), no_restart=False)  # Ray restarts it
    job = p.wait_state(job_id, "SUCCEEDED", timeout=90)
    assert job["attempt"] == 1  # followed again, not retried
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # and the finished runner is cleaned up by the new controller
        if runtime_env.runner_name(job_id, 1) not in alive_actors():
            break
        time.sleep(0.5)
    else:
        raise AssertionError("runner still alive after the restarted controller saw the job finish")


def alive_actors() -> list[str]:
    return [a.name for a in ray.util.state.list_actors(filters=[("state", "=", "ALIVE")], limit=1000)]


def test_a_job_that_ends_while_no_controller_runs_has_its_runner_ended_by_the_next(platform):
    """The race a controller restart can lose (seen on a slow machine): the job ends before the
    restarted controller's first look, is never active again, and its runner would stay forever."""
    p = platform
    job_id = p.create_job(framework="fake", model_name="fake-gap", task_type="image_classification",
                          epochs=4, config={"behaviour": "succeed", "epoch_seconds": 0.5})["id"]
    p.wait_state(job_id, "RUNNING", timeout=60)
    ray.kill(ray.get_actor(CONTROLLER_ACTOR, namespace=NAMESPACE), no_restart=True)  # gone until started again
    try:
        job = p.wait_state(job_id, "SUCCEEDED", timeout=90)  # the trainer's callbacks need no controller
        runner = runtime_env.runner_name(job_id, 1)
        assert job["attempt"] == 1 and runner in alive_actors()  # no one has ended it
    finally:
        ensure_controller(p.settings)  # what the API does as it starts
    deadline = time.monotonic() + 30
    while runner in alive_actors():
        assert time.monotonic() < deadline, "the new controller left the ended job's runner alive"
        time.sleep(0.5)
    assert runtime_env.parse_runner_name(runner) == (job_id, 1)
    assert runtime_env.parse_runner_name("vtp-controller") is None


def test_trainer_whose_environment_cannot_be_built_fails_with_the_reason(platform):
    p = platform
    job_id = p.create_job(framework="brokendeps", model_name="x", task_type="image_classification")["id"]
    job = p.wait_state(job_id, "FAILED", timeout=180)
    assert "could not prepare the trainer" in job["error"]
    assert "vtp-surely-no-such-package-0b1c2d" in job["error"]
    assert job["attempt"] == 1


def test_pip_and_uv_modes_hand_requirements_to_ray(tmp_path):
    manifest = TrainerRegistry([TEST_TRAINERS]).get("withdeps")
    settings = Settings(data_dir=tmp_path)
    for mode in ("pip", "uv"):
        fields = runtime_env.dependency_fields(settings, manifest.model_copy(update={"env": mode}))
        assert fields == {mode: {"packages": ["termcolor>=2.0"]}}
    none = runtime_env.dependency_fields(settings, manifest.model_copy(update={"env": "none"}))
    assert none == {}
    renv = runtime_env.build(settings, manifest.model_copy(update={"env": "pip"}), {"JOB_ID": "j"})
    assert renv["working_dir"] == str(manifest.folder) and renv["env_vars"] == {"JOB_ID": "j"}
    assert renv["py_modules"][0].endswith("trainers/sdk")
