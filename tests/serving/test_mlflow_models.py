"""A finished job's model in MLflow (issue 17): logged to its run as a pyfunc model that runs the
trainer's predict.py on the job's checkpoint, registered as a new version when the job asked
(`register_as`), and what happened shown on the job."""

from __future__ import annotations

import time
import uuid

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from tests.serving.test_model_server import png

pytestmark = pytest.mark.timeout(300)


def wait_model(p, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while (job := p.job(job_id))["mlflow_model"] is None:
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    return job


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

    client = MlflowClient(tracking_uri=p.settings.mlflow_tracking_uri)
    version = client.get_model_version(name, "1")
    assert version.run_id == job["mlflow_run_id"] and version.tags["vtp.job_id"] == job_id
    # the registered model runs the trainer's predict.py on the job's checkpoint, as the API does
    mlflow.set_tracking_uri(p.settings.mlflow_tracking_uri)
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
    mlflow.set_tracking_uri(p.settings.mlflow_tracking_uri)
    assert mlflow.pyfunc.load_model(model["uri"]).metadata.run_id == p.job(job_id)["mlflow_run_id"]
    assert not [e for e in p.events(job_id) if e["event_type"] == "model_registered"]
    r = p.api("POST", "/v1/jobs", json={"framework": "console", "task_type": "object_detection",
                                        "model_name": "console-x", "dataset_id": "ds", "register_as": "../bad"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "register_as"]
