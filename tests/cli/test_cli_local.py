"""The single-machine platform as a newcomer meets it: `vtp demo` (what `make demo` runs), then
`vtp status`, the jobs commands, `vtp down` and `vtp up`, against the real local platform."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import mlflow
import psutil
import pytest
from PIL import Image

from ray_app.local.platform import LocalPlatform
from ray_app.storage import make_client, object_exists, settings_from
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


@pytest.mark.slow
def test_demo_then_cli_then_down_and_up_keeps_everything(local_env):
    """`make demo` (= `vtp demo`, with fewer epochs) on a fresh data dir, run twice; then the
    jobs commands against the same platform; then `vtp down` leaves no process and `vtp up`
    brings every job back. One platform for all of it: each `up` costs ~40 s on 2 cores."""
    port = str(free_port())
    data_dir = Path(local_env["VTP_DATA_DIR"])
    demo = vtp(local_env, "demo", "--port", port, "--epochs", "2", timeout=900)
    out = demo.stdout + demo.stderr
    assert demo.returncode == 0, out[-4000:]
    assert "SUCCEEDED" in out and f"http://127.0.0.1:{port}/docs" in out and "vtp down" in out
    # the console's address, printed before the training is followed; the page is served there
    assert re.search(rf"watch it in the console +http://127\.0\.0\.1:{port}/#/jobs/[0-9a-f]{{16}}", out), out[-4000:]
    page = httpx.get(f"http://127.0.0.1:{port}/")
    assert page.status_code == 200 and "/console/app.js" in page.text
    checkpoint = re.search(r"checkpoint \(best\)\s+(s3://\S+)", out).group(1)
    run_id = re.search(r"mlflow run\s+([0-9a-f]{32})", out).group(1)
    settings = LocalPlatform(data_dir).platform_settings()
    assert object_exists(make_client(settings_from(settings)), checkpoint)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    run = mlflow.get_run(run_id)
    assert run.info.run_name.startswith("job-")
    # the job trained on the dataset version the demo uploaded through the API, and says so
    job_id = run.info.run_name.removeprefix("job-")
    job = json.loads(vtp(local_env, "jobs", "get", job_id, "--json").stdout)
    dataset = json.loads(vtp(local_env, "datasets", "get", "demo-shapes", "--json").stdout)
    assert job["dataset_version"] == dataset["latest_valid_version"] == dataset["versions"][0]["version"]
    assert job["dataset_uri"] == dataset["versions"][0]["uri"]
    assert run.data.tags["vtp.dataset_version"] == job["dataset_version"]
    # a user elsewhere, with the URL and a token only, lists and downloads the job's files
    remote = {"PATH": os.environ["PATH"], "HOME": str(data_dir.parent / "remote-home"),
              "VTP_API_URL": f"http://127.0.0.1:{port}",
              "VTP_API_TOKEN": (data_dir / "secrets" / "api_token").read_text().strip()}
    files = json.loads(vtp(remote, "jobs", "artifacts", job_id, "--json").stdout)["items"]
    names = {f["name"]: f for f in files}
    plots = [n for n in names if n.endswith(".png")]
    assert "best.pt" in names and "results.csv" in names and plots, names
    out = data_dir.parent / "downloads"
    out.mkdir()
    for name in ("best.pt", plots[0]):
        got = vtp(remote, "jobs", "artifacts", job_id, name, "-o", str(out), "--json")
        assert got.returncode == 0, got.stdout + got.stderr
        saved = Path(json.loads(got.stdout)["path"])
        assert saved.parent == out and saved.stat().st_size == names[name]["size_bytes"] > 0
    assert (out / "best.pt").read_bytes()[:2] == b"PK"  # torch.save's zip container
    assert Image.open(out / Path(plots[0]).name).size[0] > 0
    missing = vtp(remote, "jobs", "artifacts", job_id, "nope.pt")
    assert missing.returncode == 3 and "best.pt" in missing.stderr
    # idempotent: a second run reuses the platform and the dataset in S3
    again = vtp(local_env, "demo", "--port", port, "--epochs", "1", timeout=900)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert "already running" in again.stdout and "already uploaded" in again.stdout

    status = vtp(local_env, "status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["health"]["status"] == "ok"
    submit = vtp(local_env, "jobs", "submit", "--framework", "fake", "--model", "fake-cli",
                 "--dataset", "ds", "--task-type", "image_classification", "--epochs", "2",
                 "--config", '{"behaviour": "succeed", "epoch_seconds": 0.2}', "--watch", "--json")
    assert submit.returncode == 0, submit.stdout + submit.stderr
    listed = json.loads(vtp(local_env, "jobs", "list", "--json").stdout)["items"]
    assert [(j["framework"], j["state"]) for j in listed] == [
        ("fake", "SUCCEEDED"), ("ultralytics", "SUCCEEDED"), ("ultralytics", "SUCCEEDED")]
    logs = vtp(local_env, "jobs", "logs", listed[0]["id"], "--follow")
    assert "fake trainer attempt 1" in logs.stdout and "trainer exited with code 0" in logs.stdout

    platform = LocalPlatform(data_dir)
    before = platform.processes()
    assert before
    down = vtp(local_env, "down")
    assert down.returncode == 0
    assert not [p for p in before if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not [p for p in LocalPlatform(data_dir).processes() if p.status() != psutil.STATUS_ZOMBIE]
    assert vtp(local_env, "status").returncode == 3  # nothing answers

    up = vtp(local_env, "up", "--port", port)
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"http://127.0.0.1:{port}" in up.stdout and "vtp down" in up.stdout
    relisted = json.loads(vtp(local_env, "jobs", "list", "--json").stdout)["items"]
    assert [(j["id"], j["state"]) for j in relisted] == [(j["id"], j["state"]) for j in listed]


def test_cli_errors_have_exit_codes(local_env):
    # nothing is running on this data dir: the API cannot be reached
    r = vtp({**local_env, "VTP_API_URL": f"http://127.0.0.1:{free_port()}"}, "jobs", "list")
    assert r.returncode == 3 and "cannot reach" in r.stderr
    r = vtp(local_env, "jobs", "submit", "--framework", "x", "--model", "m", "--dataset", "d",
            "--config", "{not json")
    assert r.returncode == 2 and "must be JSON" in r.stderr
    # settings that contradict each other are refused at start, with the reason, not a traceback
    r = vtp({**local_env, "VTP_HEARTBEAT_TIMEOUT_S": "60"}, "up")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    message = " ".join(r.stderr.split())
    assert "settings refused: VTP_STORAGE_RETRY_S (120s) must be below VTP_HEARTBEAT_TIMEOUT_S (60s)" in message, message
    assert not (Path(local_env["VTP_DATA_DIR"]) / "local.json").exists()  # nothing was started
