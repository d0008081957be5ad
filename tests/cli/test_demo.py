"""`vtp demo` end to end (what `make demo` runs), with fewer epochs: platform up, sample
dataset, an Ultralytics job followed live, a checkpoint in S3 and an MLflow run at the end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from ray_app.local.platform import LocalPlatform
from ray_app.storage import make_client, object_exists, settings_from
from tests.fixtures.ports import free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_trains_a_detector_end_to_end(tmp_path):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "VTP_DATA_DIR": str(tmp_path / "vtp"),
           "VTP_TRAINER_VENVS_DIR": str(Path.home() / ".cache" / "vtp-test-venvs")}
    env.pop("VTP_TRAINER_PATHS", None)
    port = str(free_port())
    try:
        run = subprocess.run([sys.executable, "-m", "ray_app", "demo", "--port", port, "--epochs", "3"],
                             env=env, capture_output=True, text=True, timeout=900, cwd=REPO)
        out = run.stdout + run.stderr
        assert run.returncode == 0, out[-4000:]
        assert "SUCCEEDED" in out and f"http://127.0.0.1:{port}/docs" in out and "vtp down" in out
        checkpoint = re.search(r"checkpoint \(best\)\s+(s3://\S+)", out).group(1)
        run_id = re.search(r"mlflow run\s+([0-9a-f]{32})", out).group(1)
        local = LocalPlatform(tmp_path / "vtp")
        settings = local.platform_settings()
        assert object_exists(make_client(settings_from(settings)), checkpoint)
        mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
        run_info = mlflow.get_run(run_id)
        assert run_info.info.run_name.startswith("job-")
        # idempotent: a second run reuses the platform and the dataset
        again = subprocess.run([sys.executable, "-m", "ray_app", "demo", "--port", port, "--epochs", "1"],
                               env=env, capture_output=True, text=True, timeout=900, cwd=REPO)
        assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
        assert "already running" in again.stdout and "already in S3" in again.stdout
    finally:
        subprocess.run([sys.executable, "-m", "ray_app", "down"], env=env, capture_output=True, timeout=120)
