"""A finished job's model in MLflow (issues 17, 31): logged to its run as a pyfunc model that runs the
trainer's predict.py on the job's checkpoint, registered as a new version when the job asked
(`register_as`), and what happened shown on the job. MLflow is the platform's own server (the API's
/mlflow, ray_app/serving/mlflow_server.py) keeping artifacts in the bucket: a model loads with the API
URL and a token alone, and an earlier installation's artifacts in local folders move there."""

from __future__ import annotations

import json
import shutil
import sys
import time
import uuid

import httpx
import mlflow
import pytest
from mlflow.tracking import MlflowClient

from ray_app.serving.mlflow_migrate import migrate
from ray_app.serving.mlflow_models import PYFUNC
from tests.fixtures.platform import TEST_TRAINERS
from tests.serving.mlflow_load import predict_registered
from tests.serving.test_model_server import png

pytestmark = pytest.mark.timeout(300)

# the test trainer's predict.py: what it was asked, per image; its model is a dataclass under
# `from __future__ import annotations`, as the Ultralytics trainer's is
ECHO_PREDICT = '''from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass
class Model:
    class_name: str


def load_model(checkpoint_path, device="cpu"):
    with open(checkpoint_path) as f:
        return Model(json.load(f)["class_name"])


def predict(model, image_paths, **options):
    return [{"class_name": model.class_name, "options": options} for _ in image_paths]
'''


@pytest.fixture(scope="module")
def echo_trainer(deployment):
    """The console trainer's train.py (MLflow run on `config.mlflow`) with the predict.py above, as
    a plugin."""
    folder = deployment.plugins_dir / "mlflowecho"
    folder.mkdir(exist_ok=True)
    shutil.copy(TEST_TRAINERS / "console" / "train.py", folder / "train.py")
    (folder / "predict.py").write_text(ECHO_PREDICT)
    (folder / "trainer.yaml").write_text(
        "name: mlflowecho\ntask_types: [object_detection]\nmodels: ['echo-*']\n"
        "entrypoints: {train: train.py, predict: predict.py}\nresources: {num_cpus: 0}\n")
    yield folder
    shutil.rmtree(folder)


def wait_model(p, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while (job := p.job(job_id))["mlflow_model"] is None:
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    return job


def bucket_keys(s3_server, prefix: str) -> list[str]:
    pages = s3_server.client().get_paginator("list_objects_v2").paginate(Bucket=s3_server.bucket, Prefix=prefix)
    return [o["Key"][len(prefix):] for page in pages for o in page.get("Contents", [])]


def test_a_job_registers_its_model_which_loads_and_predicts_like_the_api(platform, tmp_path):
    p = platform
    name = f"console-model-{uuid.uuid4().hex[:6]}"
    job_id = p.create_job(framework="console", model_name="console-registry", project_id="registry", epochs=2,
                          register_as=name, config={"mlflow": True, "class_name": "triangle"})["id"]
    assert p.wait_final(job_id, timeout=120)["state"] == "SUCCEEDED"
    job = wait_model(p, job_id)
    model = job["mlflow_model"]
    assert model == {"uri": f"runs:/{job['mlflow_run_id']}/model", "registered_name": name,
                     "registered_version": 1, "error": None}
    assert job["register_as"] == name
    events = {e["event_type"]: e for e in p.events(job_id)}
    assert "model registered as" in events["model_registered"]["message"]

    client = p.mlflow()
    version = client.get_model_version(name, "1")
    assert version.run_id == job["mlflow_run_id"] and version.tags["vtp.job_id"] == job_id
    # the registered model runs the trainer's predict.py on the job's checkpoint, as the API does
    loaded = mlflow.pyfunc.load_model(f"models:/{name}/1")
    image = tmp_path / "probe.png"
    image.write_bytes(png(80, 40))
    predicted = loaded.predict([str(image)])
    assert predicted[0]["boxes"][0]["class_name"] == "triangle"
    assert predicted[0]["boxes"][0]["xyxy"] == [20.0, 10.0, 60.0, 30.0]

    # a second job into the same name: version 2
    again = p.create_job(framework="console", model_name="console-registry", project_id="registry", epochs=1,
                         register_as=name, config={"mlflow": True})["id"]
    assert p.wait_final(again, timeout=120)["state"] == "SUCCEEDED"
    assert wait_model(p, again)["mlflow_model"]["registered_version"] == 2


def test_without_register_as_the_model_is_logged_only_and_bad_names_are_refused(platform):
    p = platform
    job_id = p.create_job(framework="console", model_name="console-registry", project_id="registry", epochs=1,
                          config={"mlflow": True})["id"]
    assert p.wait_final(job_id, timeout=120)["state"] == "SUCCEEDED"
    model = wait_model(p, job_id)["mlflow_model"]
    assert model["uri"].endswith("/model") and model["registered_name"] is None
    p.mlflow()
    assert mlflow.pyfunc.load_model(model["uri"]).metadata.run_id == p.job(job_id)["mlflow_run_id"]
    assert not [e for e in p.events(job_id) if e["event_type"] == "model_registered"]
    r = p.api("POST", "/v1/jobs", json={"framework": "console", "task_type": "object_detection",
                                        "model_name": "console-x", "dataset_id": "ds", "register_as": "../bad"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "register_as"]


def test_a_registered_model_loads_from_the_bucket_with_the_api_url_and_a_token_alone(platform, echo_trainer,
                                                                                      s3_server, tmp_path):
    """Issue 31, items 7-9: the model's files are in the bucket, not in a local folder; another process
    with only the API URL and a token loads it (predict.py's dataclass and all) and its params reach
    predict.py; the model carries its own requirements and no uv project files of the platform."""
    p = platform
    name = f"echo-model-{uuid.uuid4().hex[:6]}"
    job_id = p.create_job(framework="mlflowecho", model_name="echo-1", project_id="registry", epochs=1,
                          register_as=name, config={"mlflow": True, "class_name": "circle"})["id"]
    assert p.wait_final(job_id, timeout=120)["state"] == "SUCCEEDED"
    assert wait_model(p, job_id)["mlflow_model"]["registered_version"] == 1, p.job(job_id)["mlflow_model"]

    run = p.mlflow().get_run(p.job(job_id)["mlflow_run_id"])
    experiment, run_id = run.info.experiment_id, run.info.run_id
    assert run.info.artifact_uri == f"mlflow-artifacts:/{experiment}/{run_id}/artifacts"
    files = bucket_keys(s3_server, f"mlflow/{experiment}/{run_id}/artifacts/model/")
    assert {"MLmodel", "requirements.txt", "python_env.yaml", "mlflow_pyfunc.py",
            "artifacts/mlflowecho/predict.py", "artifacts/console-best.json"} <= set(files), files
    assert not {"uv.lock", "pyproject.toml"} & set(files), files  # the platform's, not the model's
    info = mlflow.models.get_model_info(f"models:/{name}/1")
    assert [(s.name, s.default) for s in info.signature.params.params] == [("conf", 0.25), ("top_k", 5)]
    requirements = open(mlflow.pyfunc.get_model_dependencies(f"models:/{name}/1")).read().split()
    assert requirements == [f"mlflow=={mlflow.__version__}"]  # the echo trainer declares none of its own

    image = tmp_path / "probe.png"
    image.write_bytes(png(32, 32))
    predicted = predict_registered(sys.executable, p.mlflow_uri, p.api_token, f"models:/{name}/1",
                                   [image, image], {"conf": 0.5, "top_k": 2}, tmp_path / "user")
    assert predicted == [{"class_name": "circle", "options": {"conf": 0.5, "top_k": 2}}] * 2
    assert predict_registered(sys.executable, p.mlflow_uri, p.api_token, f"models:/{name}/1", [image], None,
                              tmp_path / "user") == [{"class_name": "circle", "options": {"conf": 0.25, "top_k": 5}}]

    # MLflow answers the platform's tokens only: an API token, or a trainer's callback token
    search = f"{p.mlflow_uri}/api/2.0/mlflow/experiments/search"
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": f"Bearer {p.token(job_id)}x"}):
        r = httpx.post(search, json={"max_results": 1}, headers=headers)
        assert r.status_code == 401 and "MLFLOW_TRACKING_TOKEN" in r.json()["detail"], r.text
    assert httpx.post(search, json={"max_results": 1},
                      headers={"Authorization": f"Bearer {p.token(job_id)}"}).status_code == 200
    # and only MLflow's tracking, registry and artifact APIs: not its AI gateway (which calls out with
    # stored secrets), webhooks or UI
    for path in ("/api/3.0/mlflow/gateway/secrets/list", "/api/2.0/mlflow/webhooks", "/", "/gateway/x/mlflow/invocations"):
        r = httpx.get(f"{p.mlflow_uri}{path}", headers={"Authorization": f"Bearer {p.api_token}"})
        assert r.status_code == 404 and "not served" in r.json()["detail"], (path, r.text)


def test_an_earlier_installations_local_artifacts_move_to_the_bucket_and_keep_loading(platform, echo_trainer,
                                                                                        s3_server, tmp_path):
    """Issue 31, item 8: what an earlier version left (a run's files in a trainer package's `mlruns`,
    a registered version pointing there) is moved by the migration `vtp up` runs; the version then
    loads through the platform's MLflow with the local folder gone. A run whose folder is not on
    this machine is left as it was."""
    p = platform
    store = MlflowClient(tracking_uri=p.settings.mlflow_tracking_uri)  # as the platform used to: the store itself
    mlruns = tmp_path / "vtp-trainer-packages" / "_ray_pkg_0123" / "mlruns"
    experiment = store.create_experiment(f"project-old-{uuid.uuid4().hex[:6]}", artifact_location=str(mlruns / "1"))
    run = store.create_run(experiment, run_name="job-old")
    checkpoint = tmp_path / "best.json"
    checkpoint.write_text(json.dumps({"class_name": "hexagon"}))
    mlflow.pyfunc.save_model(str(tmp_path / "saved"), python_model=str(PYFUNC),
                             mlflow_model=mlflow.models.Model(run_id=run.info.run_id),
                             artifacts={"checkpoint": str(checkpoint), "trainer": str(echo_trainer)},
                             model_config={"predict": "predict.py"}, pip_requirements=[])
    store.log_artifacts(run.info.run_id, str(tmp_path / "saved"), "model")
    store.set_terminated(run.info.run_id)
    name = f"old-model-{uuid.uuid4().hex[:6]}"
    store.create_registered_model(name)
    store.create_model_version(name, f"{run.info.artifact_uri}/model", run.info.run_id)
    elsewhere = store.create_run(experiment, run_name="job-on-another-node")  # its folder is not here
    assert run.info.artifact_uri == f"{mlruns}/1/{run.info.run_id}/artifacts"  # what the issue found

    report = migrate(p.settings)
    assert f"run {run.info.run_id}" in report.moved and f"run {elsewhere.info.run_id}" in report.not_here
    assert "model/MLmodel" in bucket_keys(s3_server, f"mlflow/{experiment}/{run.info.run_id}/artifacts/")
    shutil.rmtree(mlruns)  # the cache cleared: nothing is read from there any more

    client = p.mlflow()
    assert client.get_experiment(experiment).artifact_location == f"mlflow-artifacts:/{experiment}"
    assert client.get_run(run.info.run_id).info.artifact_uri == \
        f"mlflow-artifacts:/{experiment}/{run.info.run_id}/artifacts"
    assert client.get_run(elsewhere.info.run_id).info.artifact_uri == elsewhere.info.artifact_uri  # left as it was
    assert mlflow.pyfunc.load_model(f"models:/{name}/1").predict(["probe.png"]) == \
        [{"class_name": "hexagon", "options": {}}]
    again = migrate(p.settings)  # done once: a later start moves nothing
    assert not again.moved and again.experiments == 0
