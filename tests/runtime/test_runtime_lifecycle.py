"""Trainer runtime through the platform: real Ray actors, real trainer processes (issue 3)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import ray
from ray.util.state import list_actors

from ray_app.config import NAMESPACE
from ray_app.runtime import process_env


def fake_job(p, behaviour="succeed", epochs=3, epoch_seconds=0.3, **fields):
    return p.create_job(framework="fake", model_name="fake-net", task_type="image_classification",
                        epochs=epochs, config={"behaviour": behaviour, "epoch_seconds": epoch_seconds},
                        **fields)["id"]


def trainer_pid(p, job_id, attempt=1, timeout=30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in p.events(job_id):
            if e["event_type"] == "trainer_process" and e["data"]["attempt"] == attempt:
                return e["data"]["pid"]
        time.sleep(0.2)
    raise AssertionError("the trainer process never started")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_fake_trainer_runs_to_succeeded_with_history_logs_and_named_actor(platform):
    p = platform
    job_id = fake_job(p, epochs=4, epoch_seconds=0.8)
    p.wait_state(job_id, "RUNNING", timeout=60)
    name = f"trainer:job-{job_id}:attempt-1"
    names = {a.name for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000)}
    assert name in names  # what `ray list actors` and the dashboard show
    job = p.wait_state(job_id, "SUCCEEDED", timeout=60)
    assert job["final_metrics"]["accuracy"] == pytest.approx(0.8)
    states = [e["data"]["to"] for e in p.events(job_id) if e["event_type"] == "state_changed"]
    assert states == ["QUEUED", "RUNNING", "SUCCEEDED"]
    # where the attempt's start-up went, in order, on the runner's clock (the launch benchmark's split)
    process = p.wait_event(job_id, "trainer_process")
    stamps = process["data"]["startup"]
    order = ["worker_process_at", "runner_init_at", "packages_ready_at", "ready_at", "run_called_at",
             "trainer_spawned_at"]
    assert [stamps[k] <= stamps[n] for k, n in zip(order, order[1:])] == [True] * 5, stamps
    created = datetime.fromisoformat(job["created_at"]).timestamp()
    assert created <= stamps["runner_init_at"] and stamps["trainer_spawned_at"] - created < 60, stamps
    metrics = p.api("GET", f"/v1/jobs/{job_id}/metrics").json()["items"]
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4]
    # the trainer's stdout, kept after its actor is gone
    lines = p.logs(job_id)
    assert any("[RUNNER] trainer exited with code 0" in line for line in lines)
    assert any(f"[TRACE:{job['trace_id']}] [INFO] fake trainer attempt 1" in line for line in lines)
    # the runner had no runtime_env (process_env.py): it gave the trainer its folder, unpacked on
    # the node from the uploaded package, as its working directory, and its contract variables
    cwd = next(line.split("cwd=")[1].split(" job=")[0] for line in lines if "cwd=" in line)
    assert Path(cwd).parent == process_env.packages_dir() and (Path(cwd) / "trainer.yaml").is_file(), cwd
    assert any(f"cwd={cwd} job={job_id}" in line for line in lines)
    deadline = time.monotonic() + 30
    while name in {a.name for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000)}:
        assert time.monotonic() < deadline, "runner actor still alive after the job ended"
        time.sleep(0.5)


def test_more_gpus_than_the_cluster_has_stays_queued_then_fails(platform):
    p = platform
    job_id = fake_job(p, num_gpus=4)
    time.sleep(2)
    assert p.job(job_id)["state"] == "QUEUED"
    job = p.wait_state(job_id, "FAILED", timeout=60)
    assert "could not be placed within" in job["error"] and "num_gpus=4" in job["error"]
    assert job["error_type"] == "RESOURCE_ERROR"


def test_queued_job_waiting_for_gpus_is_cancelled_at_once(platform):
    p = platform
    job_id = fake_job(p, num_gpus=4)
    p.wait_state(job_id, "QUEUED")
    p.api("POST", f"/v1/jobs/{job_id}/cancel")
    job = p.wait_state(job_id, "CANCELLED", timeout=5)
    assert job["attempt"] == 1


def stubborn_job(p) -> tuple[str, int, int]:
    """A RUNNING job whose trainer ignores the stop and SIGTERM and has started a child:
    (job id, trainer pid, child pid)."""
    job_id = fake_job(p, behaviour="ignore_cancel", epoch_seconds=0.3)
    pid = trainer_pid(p, job_id)
    p.wait_state(job_id, "RUNNING", timeout=30)
    return job_id, pid, p.wait_event(job_id, "child_started", timeout=20)["data"]["pid"]


def test_cancel_of_trainer_ignoring_stop_and_sigterm_kills_whole_group(platform):
    p = platform
    job_id, pid, child = stubborn_job(p)
    assert alive(pid) and alive(child)
    p.api("POST", f"/v1/jobs/{job_id}/cancel")
    job = p.wait_state(job_id, "CANCELLED", timeout=60)
    assert not alive(pid) and not alive(child)  # CANCELLED only once no process is left
    assert job["finished_at"] is not None


def test_kill_9_of_trainer_process_retries_with_resume_from(platform):
    p = platform
    job_id = fake_job(p, epochs=4, epoch_seconds=0.7, max_attempts=3)
    pid = trainer_pid(p, job_id)
    p.wait_event(job_id, "checkpoint_saved")
    os.kill(pid, signal.SIGKILL)
    job = p.wait_state(job_id, "SUCCEEDED", timeout=90)
    assert job["attempt"] == 2
    retry = next(e for e in p.events(job_id) if e["event_type"] == "retry")
    assert "killed by SIGKILL" in retry["data"]["reason"]
    started = [e for e in p.events(job_id) if e["event_type"] == "started" and e["attempt"] == 2]
    assert started[0]["data"]["resume_from"].startswith(f"s3://bucket/checkpoints/job-{job_id}/epoch-")
    # the job's error is its outcome's (none); attempt 1's is in the attempt history (issue 13, 11)
    assert job["error"] is None and job["error_type"] is None
    first, second = job["attempts"]
    assert (first["attempt"], first["outcome"], first["error_type"]) == (1, "retried", "INFRASTRUCTURE_ERROR")
    assert (first["exit_code"], first["signal"]) == (-9, "SIGKILL") and "SIGKILL" in first["reason"]
    assert first["node_id"] and first["started_at"] and first["ended_at"] and first["resume_from"] is None
    assert (second["attempt"], second["outcome"], second["error_type"]) == (2, "succeeded", None)
    assert second["resume_from"] == started[0]["data"]["resume_from"]
    # its exit and node are added once the controller has seen the process go (after its done)
    deadline = time.monotonic() + 30
    while second["exit_code"] is None and time.monotonic() < deadline:
        time.sleep(0.3)
        second = p.job(job_id)["attempts"][1]
    assert (second["exit_code"], second["node_id"]) == (0, first["node_id"])


def test_killing_the_runner_actor_retries_with_resume_from(platform):
    p = platform
    job_id = fake_job(p, epochs=5, epoch_seconds=0.7, max_attempts=3)
    pid = trainer_pid(p, job_id)
    p.wait_event(job_id, "checkpoint_saved")
    ray.kill(ray.get_actor(f"trainer:job-{job_id}:attempt-1", namespace=NAMESPACE), no_restart=True)
    job = p.wait_state(job_id, "SUCCEEDED", timeout=90)
    assert job["attempt"] == 2
    assert not alive(pid)  # the old attempt's process died with its actor
    retry = next(e for e in p.events(job_id) if e["event_type"] == "retry")
    assert "runner actor was killed with ray.kill" in retry["data"]["reason"]
    started = [e for e in p.events(job_id) if e["event_type"] == "started" and e["attempt"] == 2]
    assert started[0]["data"]["resume_from"]


def test_config_error_does_not_retry(platform):
    job = platform.wait_state(fake_job(platform, behaviour="config_error", max_attempts=3), "FAILED", timeout=60)
    assert (job["error_type"], job["attempt"]) == ("CONFIG_ERROR", 1)
    assert "lr0x" in job["error"]


def test_network_error_retries_until_attempts_run_out(platform):
    job = platform.wait_state(fake_job(platform, behaviour="network_error", max_attempts=2), "FAILED", timeout=90)
    assert job["attempt"] == 2 and job["error_type"] == "NETWORK_ERROR"
    assert "no attempts left" in job["error"]


def test_silent_trainer_failed_by_heartbeat_timeout(short_timeouts_platform):
    p = short_timeouts_platform
    job = p.wait_state(fake_job(p, behaviour="silent"), "FAILED", timeout=60)
    assert job["error_type"] == "TIMEOUT_ERROR" and "no heartbeat for" in job["error"]


def test_stalled_trainer_flagged_then_failed(short_timeouts_platform):
    p = short_timeouts_platform
    job_id = fake_job(p, behaviour="stall", epoch_seconds=0.5)
    job = p.wait_state(job_id, "FAILED", timeout=60)
    assert job["error_type"] == "TIMEOUT_ERROR" and "has not advanced" in job["error"]
    kinds = [e["event_type"] for e in p.events(job_id)]
    assert kinds.index("stalled") < len(kinds) - 1  # flagged before it was failed


def test_exit_zero_without_done_is_failed(platform):
    job = platform.wait_state(fake_job(platform, behaviour="exit0"), "FAILED", timeout=60)
    assert "without sending done" in job["error"]


def test_trainer_requirements_live_in_its_own_venv(platform):
    p = platform
    check = subprocess.run([sys.executable, "-c", "import termcolor"], capture_output=True)
    assert check.returncode != 0, "the platform environment must not have termcolor"
    job_id = p.create_job(framework="withdeps", model_name="any", task_type="image_classification")["id"]
    job = p.wait_state(job_id, "SUCCEEDED", timeout=300)
    module_file = job["artifacts"]["module_file"]
    assert str(p.settings.venvs_dir) in module_file
    check = subprocess.run([sys.executable, "-c", "import termcolor"], capture_output=True)
    assert check.returncode != 0  # still not in the platform's environment


def test_the_trainer_process_gets_no_platform_secret(platform):
    """The JWT secret would let a trainer forge other jobs' callback tokens (issue 13, review)."""
    p = platform
    job_id = fake_job(p, epochs=3, epoch_seconds=1.0)
    pid = trainer_pid(p, job_id)
    with open(f"/proc/{pid}/environ", "rb") as fh:
        names = {item.split(b"=", 1)[0].decode() for item in fh.read().split(b"\0") if item}
    assert "CALLBACK_TOKEN" in names and "JOB_ID" in names
    assert not names & {"VTP_JWT_SECRET", "VTP_API_TOKENS", "VTP_DATABASE_URL"}, names
    p.wait_state(job_id, "SUCCEEDED", timeout=60)


def test_the_timeline_shows_the_process_start_before_anything_the_process_said(platform):
    """Issue 31: the runner's `trainer_process` event used to be stored after the trainer's own
    first events (its store call raced the trainer's callbacks); the trainer now starts once it is."""
    p = platform
    jobs = [fake_job(p, epochs=1, epoch_seconds=0.05) for _ in range(3)]
    for job_id in jobs:
        p.wait_state(job_id, "SUCCEEDED", timeout=60)
        p.wait_event(job_id, "trainer_process")
        events = p.events(job_id)
        kinds = [(e["source"], e["event_type"]) for e in events]
        first_said = next(i for i, (source, _) in enumerate(kinds) if source == "trainer")
        assert kinds.index(("platform", "trainer_process")) < first_said, kinds
        assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)


def test_a_child_left_holding_the_trainers_output_does_not_keep_the_attempt_alive(platform):
    """The runner read the trainer's output until every writer closed it, so a child the trainer
    left behind (an MLflow process blocked on storage, say) kept the attempt from ending: a retry,
    which waits for the attempt's processes to be gone, never came, and the job was failed for
    good as silent (TIMEOUT_ERROR). The trainer's exit now ends the attempt, shortly after."""
    p = platform
    job_id = fake_job(p, behaviour="leave_writer", max_attempts=2)
    job = p.wait_state(job_id, "FAILED", timeout=60)
    assert (job["attempt"], job["error_type"]) == (2, "NETWORK_ERROR"), (job["error_type"], job["error"])
    lines = p.logs(job_id, timeout=30)
    children = [int(line.split("left child ")[1].split()[0]) for line in lines if "left child" in line]
    assert len(children) == 2 and sum("still held its output" in line for line in lines) == 2, lines[-10:]
    deadline = time.monotonic() + 10
    while any(alive(child) for child in children):  # they went with their trainers' process groups
        assert time.monotonic() < deadline, children
        time.sleep(0.1)
