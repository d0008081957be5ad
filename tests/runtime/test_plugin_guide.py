"""The plugin guide's complete minimal trainer (trainers/README.md), run as written.

Its manifest and train.py are taken from the guide's code blocks and dropped into a trainer
folder while the platform runs: a new plugin folder needs no platform change or restart.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from ray_app.datasets import make_classification
from ray_app.storage.s3 import upload_dataset

GUIDE = Path(__file__).resolve().parents[2] / "trainers" / "README.md"


def guide_blocks() -> tuple[str, str]:
    text = GUIDE.read_text()
    manifest = re.search(r"```yaml\n(.*?)```", text, re.S).group(1)
    section = text.split("## A complete minimal trainer", 1)[1]
    train = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    return manifest, train


@pytest.fixture
def guide_trainer(deployment):
    manifest, train = guide_blocks()
    folder = deployment.plugins_dir / "mytrainer"
    folder.mkdir()
    (folder / "trainer.yaml").write_text(manifest)
    (folder / "train.py").write_text(train)
    yield folder
    shutil.rmtree(folder)


def test_guide_trainer_runs_as_a_plugin(platform, s3_server, guide_trainer, tmp_path):
    p = platform
    make_classification(tmp_path / "ds", n_images=12, size=32, seed=3)
    upload_dataset(s3_server.client(), s3_server.bucket, "guide-ds", tmp_path / "ds")
    job = p.create_job(framework="mytrainer", model_name="resnet18", task_type="image_classification",
                       dataset_id="guide-ds", epochs=3)
    job = p.wait_state(job["id"], "SUCCEEDED", timeout=180)
    assert job["final_metrics"]["loss"] == pytest.approx(0.7 ** 3)
    assert job["artifacts"]["last"] == f"s3://{s3_server.bucket}/checkpoints/job-{job['id']}/last.pt"
    kinds = [e["event_type"] for e in p.events(job["id"])]
    assert "dataset_loaded" in kinds and "checkpoint_saved" in kinds
    metrics = p.api("GET", f"/v1/jobs/{job['id']}/metrics").json()["items"]
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    # resuming from its checkpoint restores what it saved: the loss goes on from epoch 3's
    resumed = p.create_job(framework="mytrainer", model_name="resnet18", task_type="classify",
                           dataset_id="guide-ds", epochs=5, resume_from=job["artifacts"]["last"])
    assert resumed["task_type"] == "image_classification"  # the contract's alias, stored as the DICE name
    resumed = p.wait_state(resumed["id"], "SUCCEEDED", timeout=180)
    assert resumed["final_metrics"]["loss"] == pytest.approx(0.7 ** 5)
    metrics = p.api("GET", f"/v1/jobs/{resumed['id']}/metrics").json()["items"]
    assert [(m["epoch"], m["metrics"]["loss"]) for m in metrics] == [(4, pytest.approx(0.7 ** 4)),
                                                                      (5, pytest.approx(0.7 ** 5))]
    # the model name is checked against the plugin's manifest patterns
    r = p.api("POST", "/v1/jobs", json={"framework": "mytrainer", "model_name": "yolo11n",
                                        "task_type": "image_classification", "dataset_id": "guide-ds"})
    assert r.status_code == 422 and "has no model 'yolo11n'" in r.json()["detail"][0]["msg"]
