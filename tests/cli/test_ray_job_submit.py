"""The Ray-native path: deploy the platform and train with `ray job submit` on a running cluster."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


def ray_job_submit(cluster, env_vars: dict[str, str], *entrypoint: str) -> subprocess.CompletedProcess:
    cmd = [RAY, "job", "submit", "--address", f"http://127.0.0.1:{cluster.dashboard_port}",
           "--runtime-env-json", json.dumps({"env_vars": env_vars}), "--", *entrypoint]
    return subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, timeout=600)


def test_deploy_and_train_through_ray_job_submit(ray_cluster, deployment, platform):
    settings_env = deployment.settings_env(platform.database_url)
    # 1. the operator deploys the platform as a Ray job
    deployed = ray_job_submit(ray_cluster, settings_env, sys.executable, "-m", "ray_app", "deploy",
                              "--port", str(deployment.port))
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    assert f"platform deployed: {platform.base_url}" in deployed.stdout
    # 2. a training job submitted and followed from a Ray job, through the HTTP API
    trained = ray_job_submit(
        ray_cluster, {"VTP_API_URL": platform.base_url, "VTP_API_TOKEN": platform.api_token},
        sys.executable, "-m", "ray_app", "jobs", "submit", "--framework", "fake", "--model", "fake-rayjob",
        "--dataset", "ds", "--task-type", "image_classification", "--epochs", "2",
        "--config", '{"behaviour": "succeed", "epoch_seconds": 0.2}', "--project", "ray-job-submit", "--watch",
    )
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    assert "SUCCEEDED" in trained.stdout
    jobs = platform.api("GET", "/v1/jobs", params={"project_id": "ray-job-submit"}).json()["items"]
    assert [j["state"] for j in jobs] == ["SUCCEEDED"]
    assert platform.api_token not in trained.stdout  # the token is not echoed into the job's logs
