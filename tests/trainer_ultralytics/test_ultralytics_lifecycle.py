"""The Ultralytics trainer's lifecycle through the platform: cancel, a killed attempt resumed from
its checkpoint, and the failures that must come fast (bad config, broken dataset)."""
from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from ray_app.datasets import make_detection, zip_dataset
from ray_app.storage.s3 import upload_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def detection_dataset(s3_server, tmp_path_factory) -> str:
    """32 images of 96 px: a short epoch (4 batches of 8), enough to train on."""
    root = make_detection(tmp_path_factory.mktemp("ul-life") / "det", n_images=32, size=96, seed=21)
    dataset_id = f"ul-life-{uuid.uuid4().hex[:8]}"
    upload_dataset(s3_server.client(), s3_server.bucket, dataset_id, zip_dataset(root))
    return dataset_id


def create(p, dataset_id: str, epochs: int, **fields) -> str:
    body = dict(framework="ultralytics", task_type="object_detection", model_name="yolo11n",
                dataset_id=dataset_id, epochs=epochs, batch_size=8, image_size=96, num_cpus=2,
                advanced_config={"plots": False})  # an Ultralytics argument; saves seconds here
    return p.create_job(**{**body, **fields})["id"]


def wait_event(p, job_id: str, match, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in p.events(job_id):
            if match(e):
                return e
        job = p.job(job_id)
        if job["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            raise AssertionError(f"job ended {job['state']} ({job['error']}) before the event; "
                                 + "\n".join(p.logs(job_id, complete=False)[-40:]))
        time.sleep(0.3)
    raise AssertionError(f"no such event within {timeout}s: {[e['event_type'] for e in p.events(job_id)]}")


def last_saved(attempt: int):
    return lambda e: (e["event_type"] == "checkpoint_saved" and e["attempt"] == attempt
                      and e["data"].get("name") == "last")


def test_cancel_stops_within_an_epoch_with_last_saved(platform, s3_server, detection_dataset):
    p = platform
    epochs = 40
    job_id = create(p, detection_dataset, epochs)
    saved = wait_event(p, job_id, last_saved(1), timeout=300)
    resp = p.api("POST", f"/v1/jobs/{job_id}/cancel")
    assert resp.status_code in (200, 202), resp.text
    cancelled_at = time.monotonic()
    epoch_at_cancel = p.job(job_id)["epoch"]  # the epoch in progress, as the heartbeats tell it
    job = p.wait_final(job_id, timeout=120)
    waited = time.monotonic() - cancelled_at
    assert job["state"] == "CANCELLED", (job["state"], job["error"])

    history = p.api("GET", f"/v1/jobs/{job_id}/metrics").json()["items"]
    assert history and max(m["epoch"] for m in history) <= epoch_at_cancel + 1  # within one epoch
    assert job["epoch"] < epochs
    events = p.events(job_id)
    cancel_seq = next(e["seq"] for e in events if e["event_type"] == "cancel_requested")
    assert saved["seq"] < cancel_seq  # a checkpoint existed before the cancel
    bucket, _, key = job["last_checkpoint"][len("s3://"):].partition("/")
    assert key == f"checkpoints/job-{job_id}/last.pt"
    assert s3_server.client().head_object(Bucket=bucket, Key=key)["ContentLength"] > 1_000_000
    lines = p.logs(job_id)
    # the trainer honoured the request itself (heartbeat reply, or the SIGTERM that follows it after
    # the grace period): it stopped between batches, saved `last` and exited before any SIGKILL
    assert any("stop requested:" in line for line in lines)
    assert any("training stopped" in line and "uploads: complete" in line for line in lines), lines[-30:]
    # the runner's own line comes after the process ended, and can be stored after the job's end
    deadline = time.monotonic() + 30
    while not any("trainer exited with code 0" in line or "trainer exited with code -15" in line for line in lines):
        assert time.monotonic() < deadline, lines[-30:]
        time.sleep(0.5)
        lines = p.logs(job_id)
    assert waited < 90


def test_killed_attempt_resumes_from_last_checkpoint_and_completes_every_epoch(platform, s3_server,
                                                                               detection_dataset):
    p = platform
    epochs = 6
    job_id = create(p, detection_dataset, epochs, max_attempts=2)
    pid = wait_event(p, job_id, lambda e: e["event_type"] == "trainer_process" and e["data"]["attempt"] == 1,
                     timeout=120)["data"]["pid"]
    wait_event(p, job_id, last_saved(1), timeout=300)
    os.kill(pid, signal.SIGKILL)  # the node "lost" the process: not the trainer's fault

    job = p.wait_final(job_id, timeout=420)
    assert job["state"] == "SUCCEEDED", (job["state"], job["error"], p.logs(job_id, complete=False)[-60:])
    assert job["attempt"] == 2
    resume_from = f"s3://{s3_server.bucket}/checkpoints/job-{job_id}/last.pt"
    events = p.events(job_id)
    started = [e for e in events if e["event_type"] == "started" and e["attempt"] == 2]
    assert started and started[0]["data"]["resume_from"] == resume_from
    history = p.api("GET", f"/v1/jobs/{job_id}/metrics").json()["items"]
    second = sorted(m["epoch"] for m in history if m["attempt"] == 2)
    first = sorted(m["epoch"] for m in history if m["attempt"] == 1)
    assert first and second and second[0] > 1, (first, second)  # continued, not started over
    assert second == list(range(second[0], epochs + 1))  # ... up to the job's full epoch count
    assert second[0] <= max(first) + 1  # nothing skipped beyond the epoch that was cut short
    assert job["final_metrics"]["epochs_completed"] == epochs
    assert job["epoch"] == epochs and job["progress"] == 100
    assert any(f"resuming from {resume_from}" in line for line in p.logs(job_id))


def test_unknown_hyperparameter_fails_fast_with_config_error(platform, detection_dataset):
    p = platform
    job_id = create(p, detection_dataset, 3, advanced_config={"lr0": 0.01, "mosiac": 0.5, "plots": False})
    job = p.wait_final(job_id, timeout=180)
    assert job["state"] == "FAILED" and job["error_type"] == "CONFIG_ERROR", job["error"]
    assert "'mosiac'" in job["error"] and "did you mean 'mosaic'" in job["error"]
    assert job["attempt"] == 1  # a config error is never retried
    kinds = [e["event_type"] for e in p.events(job_id)]
    assert "started" in kinds and "dataset_loaded" not in kinds  # refused before any download
    assert p.api("GET", f"/v1/jobs/{job_id}/metrics").json()["items"] == []


def test_broken_dataset_fails_with_dataset_error_before_the_first_epoch(platform, s3_server, tmp_path):
    p = platform
    root = make_detection(tmp_path / "broken", n_images=12, size=64, seed=4)
    data = json.loads((root / "annotations.json").read_text())
    (root / "images" / data["images"][3]["file_name"]).unlink()  # an image the annotations name
    data["images"][5]["annotations"][0]["bbox"] = [50, 50, 40, 40]  # a box outside its 64 px image
    (root / "annotations.json").write_text(json.dumps(data))
    dataset_id = f"ul-broken-{uuid.uuid4().hex[:8]}"
    upload_dataset(s3_server.client(), s3_server.bucket, dataset_id, zip_dataset(Path(root)))

    job_id = create(p, dataset_id, 3, image_size=64)
    job = p.wait_final(job_id, timeout=180)
    assert job["state"] == "FAILED" and job["error_type"] == "DATASET_ERROR", job["error"]
    assert data["images"][3]["file_name"] in job["error"] and "missing" in job["error"]
    assert job["attempt"] == 1
    kinds = [e["event_type"] for e in p.events(job_id)]
    assert "dataset_loaded" in kinds and "model_initialized" not in kinds and "checkpoint_saved" not in kinds
    assert p.api("GET", f"/v1/jobs/{job_id}/metrics").json()["items"] == []
