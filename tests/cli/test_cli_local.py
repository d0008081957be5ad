"""`vtp up` / `vtp down` / `vtp status` and the jobs commands against the real local platform."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from ray_app.local.platform import LocalPlatform
from tests.fixtures.platform import TEST_TRAINERS
from tests.fixtures.ports import free_port

REPO = Path(__file__).resolve().parents[2]


def vtp(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ray_app", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


@pytest.fixture
def local_env(tmp_path):
    env = dict(os.environ)
    env.update({
        "RAY_AUTH_MODE": "disabled",
        "VTP_DATA_DIR": str(tmp_path / "vtp-data"),
        "VTP_TRAINER_PATHS": os.pathsep.join([str(REPO / "trainers"), str(TEST_TRAINERS)]),
        "VTP_TRAINER_VENVS_DIR": str(Path.home() / ".cache" / "vtp-test-venvs"),
    })
    env.pop("VTP_API_URL", None)
    env.pop("RAY_ADDRESS", None)  # the test session's cluster is not this platform's
    yield env
    vtp(env, "down", timeout=120)


def test_up_job_down_up_keeps_data_and_leaves_no_process(local_env):
    port = str(free_port())
    up = vtp(local_env, "up", "--port", port)
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"http://127.0.0.1:{port}" in up.stdout and "vtp down" in up.stdout
    status = vtp(local_env, "status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["health"]["status"] == "ok"

    submit = vtp(local_env, "jobs", "submit", "--framework", "fake", "--model", "fake-cli",
                 "--dataset", "ds", "--task-type", "image_classification", "--epochs", "2",
                 "--config", '{"behaviour": "succeed", "epoch_seconds": 0.2}', "--watch", "--json")
    assert submit.returncode == 0, submit.stdout + submit.stderr
    listed = json.loads(vtp(local_env, "jobs", "list", "--json").stdout)["items"]
    assert [j["state"] for j in listed] == ["SUCCEEDED"]
    job_id = listed[0]["id"]
    logs = vtp(local_env, "jobs", "logs", job_id)
    assert "fake trainer attempt 1" in logs.stdout

    platform = LocalPlatform(Path(local_env["VTP_DATA_DIR"]))
    before = platform.processes()
    assert before
    down = vtp(local_env, "down")
    assert down.returncode == 0
    assert not [p for p in before if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert vtp(local_env, "status").returncode == 3  # nothing answers

    again = vtp(local_env, "up", "--port", port)
    assert again.returncode == 0, again.stdout + again.stderr
    listed = json.loads(vtp(local_env, "jobs", "list", "--json").stdout)["items"]
    assert [(j["id"], j["state"]) for j in listed] == [(job_id, "SUCCEEDED")]


def test_cli_errors_have_exit_codes(local_env):
    # nothing is running on this data dir: the API cannot be reached
    r = vtp({**local_env, "VTP_API_URL": f"http://127.0.0.1:{free_port()}"}, "jobs", "list")
    assert r.returncode == 3 and "cannot reach" in r.stderr
    r = vtp(local_env, "jobs", "submit", "--framework", "x", "--model", "m", "--dataset", "d",
            "--config", "{not json")
    assert r.returncode == 2 and "must be JSON" in r.stderr
