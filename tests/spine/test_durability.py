"""Nothing is lost when the JobStore actor dies or the whole Ray cluster restarts (both databases)."""

from __future__ import annotations

import time

import ray

from ray_app.config import NAMESPACE, STORE_ACTOR


def _finished_job(p, status: str) -> str:
    job_id = p.create_job(epochs=2)["id"]
    p.wait_state(job_id, "QUEUED")
    p.callback(job_id, "event", {"event_id": f"s-{job_id}", "event_type": "started"})
    for epoch in (1, 2):
        p.callback(job_id, "heartbeat", {"event_id": f"h{epoch}-{job_id}", "epoch": epoch,
                                         "total_epochs": 2, "metrics": {"loss": 1.0 / epoch}})
    body = {"status": status, "event_id": f"d-{job_id}", "final_metrics": {"loss": 0.5}}
    if status == "failed":
        body.update(error="bad dataset", error_type="DATASET_ERROR")
    assert p.callback(job_id, "done", body).status_code == 200
    # the controller launched a runner for the QUEUED job: its own platform events (trainer
    # process, attempt end) may still land after done; compare once the history has settled
    last, deadline = None, time.monotonic() + 60
    while time.monotonic() < deadline:
        now = [e["seq"] for e in p.events(job_id)]
        if now == last:
            break
        last = now
        time.sleep(2.0)
    return job_id


def _snapshot(p, job_id):
    job = p.job(job_id)
    return (job["state"], job["error_type"], job["final_metrics"],
            [(e["seq"], e["event_type"]) for e in p.events(job_id)],
            [(m["epoch"], m["metrics"]) for m in p.api("GET", f"/v1/jobs/{job_id}/metrics").json()["items"]])


def test_killed_job_store_loses_nothing(platform_any_db):
    p = platform_any_db
    ok, bad = _finished_job(p, "succeeded"), _finished_job(p, "failed")
    before = {j: _snapshot(p, j) for j in (ok, bad)}
    # once killed the way Ray restarts it, once for good (the API creates it again)
    for no_restart in (False, True):
        ray.kill(ray.get_actor(STORE_ACTOR, namespace=NAMESPACE), no_restart=no_restart)
        time.sleep(0.5)
        assert {j: _snapshot(p, j) for j in (ok, bad)} == before
    # and a retried callback is still recognised as applied
    r = p.callback(ok, "done", {"status": "succeeded", "event_id": f"d-{ok}", "final_metrics": {"loss": 0.5}})
    assert r.json()["duplicate"] is True


def test_ray_cluster_restart_loses_nothing(platform, deployment):
    # on SQLite only: the file next to the cluster is what a restart could lose; PostgreSQL is a
    # server outside the cluster (test_killed_job_store_loses_nothing covers reloading from it)
    p = platform
    ok, bad = _finished_job(p, "succeeded"), _finished_job(p, "failed")
    cancelled = p.create_job()["id"]
    p.api("POST", f"/v1/jobs/{cancelled}/cancel")
    p.wait_state(cancelled, "CANCELLED", timeout=30)
    # a trainer that keeps heartbeating until the cluster goes away under it
    running = p.create_job(framework="fake", model_name="fake-long", task_type="image_classification",
                           epochs=10_000, max_attempts=3,
                           config={"behaviour": "succeed", "epoch_seconds": 0.5})["id"]
    p.wait_state(running, "RUNNING", timeout=60)
    before = {j: _snapshot(p, j) for j in (ok, bad, cancelled)}
    p = deployment.restart_cluster()
    assert {j: _snapshot(p, j) for j in (ok, bad, cancelled)} == before
    # the running job's runner died with the cluster: reconciled into a new attempt, not left RUNNING
    job = p.wait_state(running, {"QUEUED", "RUNNING"}, timeout=60)
    deadline = time.monotonic() + 60
    while job["attempt"] < 2:
        assert time.monotonic() < deadline, "the orphaned RUNNING job was never reconciled"
        time.sleep(0.3)
        job = p.job(running)
    assert job["attempt"] == 2 and job["state"] in ("QUEUED", "RUNNING")
    retry = [e for e in p.events(running) if e["event_type"] == "retry"]
    assert retry and "runner" in retry[0]["data"]["reason"]
    p.api("POST", f"/v1/jobs/{running}/cancel")
    p.wait_state(running, "CANCELLED", timeout=60)
    listed = {j["id"] for j in p.api("GET", "/v1/jobs", params={"limit": 500}).json()["items"]}
    assert {ok, bad, cancelled, running} <= listed
