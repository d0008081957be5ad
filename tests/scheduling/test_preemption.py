"""Preemption on a real cluster: a job of higher priority takes the resources of a running lower
one, which saves its checkpoint, waits in the queue, resumes from it and succeeds with every
epoch; a project whose jobs may not be preempted keeps them running."""

from __future__ import annotations

import time

from tests.scheduling.conftest import Queue


def _types(platform, job_id: str) -> list[str]:
    return [e["event_type"] for e in platform.events(job_id)]


def test_a_high_priority_job_preempts_the_youngest_low_one_which_resumes_from_its_checkpoint(platform, queue: Queue):
    cpus = queue.slot(2)
    project = queue.project()
    epochs = 10
    lows = [queue.submit(project, cpus, epochs=epochs, epoch_s=0.5, priority="low", config={"save_on_stop": True})
            for _ in range(2)]
    for low in lows:
        queue.wait(lambda low=low: (platform.job(low)["epoch"] or 0) >= 2, f"job {low} at epoch 2", timeout=90)
    urgent = queue.submit(project, cpus, epochs=3, epoch_s=0.3, priority="high")
    victim, spared = lows[1], lows[0]  # the most recently started: the least work lost

    asked = platform.wait_event(victim, "preempt_requested", timeout=30)
    assert urgent in asked["message"] and asked["level"] == "warning"
    platform.wait_event(victim, "preempted", timeout=60)
    stopped = platform.job(victim)
    assert stopped["preemptions"] == 1 and stopped["attempt"] == 2 and stopped["max_attempts"] == 3
    assert stopped["attempts"][0]["outcome"] == "preempted"
    saved = stopped["resume_from"]
    assert saved and saved.startswith(f"s3://bucket/checkpoints/job-{victim}/epoch-"), saved

    done = platform.wait_state(urgent, "SUCCEEDED", timeout=90)
    final = platform.wait_state(victim, "SUCCEEDED", timeout=120)
    assert final["attempt"] == 2 and final["preemptions"] == 1
    assert final["started_at"] > done["started_at"]  # it waited for the urgent one's turn
    # it resumed from the checkpoint it saved when asked to stop, and nothing is missing
    stopped_epoch = int(saved.rsplit("epoch-", 1)[1].split(".")[0])
    assert 2 <= stopped_epoch < epochs
    lines = platform.logs(victim)
    assert any(f"attempt 2 behaviour=succeed resume_from={saved}" in line for line in lines), lines[-20:]
    metrics = platform.api("GET", f"/v1/jobs/{victim}/metrics").json()["items"]
    assert sorted({m["epoch"] for m in metrics}) == list(range(1, epochs + 1))
    assert "preempt_requested" not in _types(platform, spared)
    assert platform.wait_state(spared, "SUCCEEDED", timeout=90)["preemptions"] == 0


def test_jobs_of_a_project_that_may_not_be_preempted_keep_running(platform, queue: Queue):
    cpus = queue.slot(2)
    kept = queue.project(preemptible=False)
    lows = [queue.submit(kept, cpus, epochs=14, epoch_s=0.5, priority="low") for _ in range(2)]
    for low in lows:
        platform.wait_state(low, "RUNNING", timeout=60)
    urgent = queue.submit(queue.project(), cpus, epochs=2, epoch_s=0.2, priority="high")
    platform.wait_state(urgent, "QUEUED", timeout=30)  # in the queue (PENDING until its first pass)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:  # a few passes: it waits, and no one is asked to stop
        job = platform.job(urgent)
        assert job["state"] == "QUEUED", job
        time.sleep(0.3)
    # (what the previous test's jobs gave back counts as on its way for a few seconds: then this)
    queue.wait(lambda: platform.job(urgent)["wait_reason"] == f"waiting for {cpus:g} CPUs to be free",
               "the reason: waiting for room", timeout=10)
    assert platform.job(urgent)["state"] == "QUEUED"
    for low in lows:
        final = platform.wait_state(low, "SUCCEEDED", timeout=90)
        assert final["preemptions"] == 0 and "preempt_requested" not in _types(platform, low)
    platform.wait_state(urgent, "SUCCEEDED", timeout=60)
