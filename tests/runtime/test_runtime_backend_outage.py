"""Training never waits on the backend: the platform's API goes away for trainers mid-run (a
forwarder in front of Serve is taken down), the loop keeps its pace, and every heartbeat and
event arrives exactly once when the API is back."""

from __future__ import annotations

import re
import statistics
import time

import pytest

from ray_app.datasets import make_classification
from ray_app.storage.s3 import upload_dataset
from tests.fixtures.forwarder import TcpForwarder

EPOCHS = 14
EPOCH_S = 0.5
OUTAGE_S = 4.0


@pytest.fixture
def forwarded_platform(deployment, sqlite_url):
    fwd = TcpForwarder(deployment.port)
    # trainers call back through the forwarder; the tests' own API calls go straight to Serve
    platform = deployment.deploy(sqlite_url, VTP_PUBLIC_BASE_URL=f"http://127.0.0.1:{fwd.port}")
    yield platform, fwd
    fwd.close()


def test_outage_does_not_slow_training_and_loses_nothing(forwarded_platform, s3_server, tmp_path):
    p, fwd = forwarded_platform
    make_classification(tmp_path / "ds", n_images=8, size=32, seed=2)
    upload_dataset(s3_server.client(), s3_server.bucket, "outage-ds", tmp_path / "ds")
    job_id = p.create_job(framework="sdkloop", model_name="toy", task_type="image_classification",
                          dataset_id="outage-ds", epochs=EPOCHS, config={"epoch_seconds": EPOCH_S})["id"]
    deadline = time.monotonic() + 120
    while not p.api("GET", f"/v1/jobs/{job_id}/metrics").json()["items"]:
        assert time.monotonic() < deadline, p.job(job_id)
        time.sleep(0.1)
    fwd.down()
    time.sleep(OUTAGE_S)
    fwd.up()
    job = p.wait_state(job_id, "SUCCEEDED", timeout=120)
    assert job["attempt"] == 1
    # every epoch's heartbeat (metrics) and validation event arrived, each exactly once
    metrics = p.api("GET", f"/v1/jobs/{job_id}/metrics").json()["items"]
    assert [m["epoch"] for m in metrics] == list(range(1, EPOCHS + 1))
    validations = [e for e in p.events(job_id) if e["event_type"] == "validation_complete"]
    assert len(validations) == EPOCHS
    # the loop kept its pace while the backend was away: no epoch took much longer than usual
    lines = p.logs(job_id)
    stamps = [float(m.group(1)) for line in lines if (m := re.search(r"epoch \d+ at ([\d.]+)", line))]
    assert len(stamps) == EPOCHS
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert max(gaps) < statistics.median(gaps) + 1.5, gaps  # an epoch blocked on the outage would take +4 s
