"""The job API over real HTTP against the Serve app on a real Ray cluster (both databases)."""

from __future__ import annotations


def _run_to_running(p, job_id: str) -> None:
    p.wait_state(job_id, "QUEUED")
    r = p.callback(job_id, "event", {"event_type": "started", "message": "go"})
    assert r.status_code == 200, r.text
    p.wait_state(job_id, "RUNNING", timeout=5)


def test_create_get_and_list(platform_any_db):
    p = platform_any_db
    job = p.create_job(project_id="proj-list", epochs=5, config={"lr0": 0.01}, task_type="detection")
    assert job["state"] == "PENDING"
    assert job["task_type"] == "object_detection"  # seed 001 alias stored as the DICE name
    assert job["attempt"] == 1 and len(job["trace_id"]) == 36
    got = p.job(job["id"])
    assert got["config"] == {"lr0": 0.01} and got["epochs"] == 5
    listed = p.api("GET", "/v1/jobs", params={"project_id": "proj-list"}).json()
    assert [j["id"] for j in listed["items"]] == [job["id"]]


def test_list_filters_and_cursor_pagination(platform_any_db):
    p = platform_any_db
    ids = [p.create_job(project_id="proj-page")["id"] for _ in range(5)]
    seen, cursor = [], None
    while True:
        params = {"project_id": "proj-page", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = p.api("GET", "/v1/jobs", params=params).json()
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))  # newest first, each exactly once
    p.api("POST", f"/v1/jobs/{ids[0]}/cancel")
    p.wait_state(ids[0], "CANCELLED")
    cancelled = p.api("GET", "/v1/jobs", params={"project_id": "proj-page", "state": "CANCELLED"}).json()
    assert [j["id"] for j in cancelled["items"]] == [ids[0]]


def test_callbacks_drive_job_to_succeeded_with_histories(platform_any_db):
    p = platform_any_db
    job_id = p.create_job(epochs=3)["id"]
    _run_to_running(p, job_id)
    for epoch in (1, 2, 3):
        r = p.callback(job_id, "heartbeat", {"epoch": epoch, "total_epochs": 3, "metrics": {"loss": 1 / epoch}})
        assert r.status_code == 200 and r.json() == {"status": "ok", "should_continue": True, "duplicate": False}
        p.callback(job_id, "event", {"event_type": "checkpoint_saved", "message": f"epoch {epoch}",
                                     "data": {"checkpoint_path": f"s3://b/checkpoints/job-{job_id}/last.pt"}})
    r = p.callback(job_id, "done", {"status": "succeeded", "final_metrics": {"mAP50": 0.9},
                                    "artifacts": {"best": "s3://b/best.pt"}, "mlflow_run_id": "run-1"})
    assert r.status_code == 200 and r.json()["state"] == "SUCCEEDED"
    job = p.job(job_id)
    assert job["state"] == "SUCCEEDED" and job["progress"] == 100.0
    assert job["final_metrics"] == {"mAP50": 0.9} and job["mlflow_run_id"] == "run-1"
    assert job["artifacts"]["best"] == "s3://b/best.pt"
    metrics = p.api("GET", f"/v1/jobs/{job_id}/metrics").json()["items"]
    assert [(m["epoch"], m["metrics"]["loss"]) for m in metrics] == [(1, 1.0), (2, 0.5), (3, 1 / 3)]
    events = p.events(job_id)
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    kinds = [e["event_type"] for e in events if e["source"] == "trainer"]
    assert kinds == ["started", "checkpoint_saved", "checkpoint_saved", "checkpoint_saved", "done"]
    states = [e["data"]["to"] for e in events if e["event_type"] == "state_changed"]
    assert states == ["QUEUED", "RUNNING", "SUCCEEDED"]
    # after= cursor gives the rest in order
    later = p.api("GET", f"/v1/jobs/{job_id}/events", params={"after": seqs[2]}).json()["items"]
    assert [e["seq"] for e in later] == seqs[3:]


def test_done_failed_stores_error_and_type(platform_any_db):
    p = platform_any_db
    job_id = p.create_job()["id"]
    _run_to_running(p, job_id)
    r = p.callback(job_id, "done", {"status": "failed", "error": "images/3.jpg missing",
                                    "error_type": "DATASET_ERROR", "traceback": "Traceback ..."})
    assert r.status_code == 200 and r.json()["state"] == "FAILED"
    job = p.job(job_id)
    assert job["state"] == "FAILED"
    assert job["error"] == "images/3.jpg missing" and job["error_type"] == "DATASET_ERROR"


def test_cancel_queued_job_at_once_and_idempotent(platform_any_db):
    p = platform_any_db
    job_id = p.create_job()["id"]
    p.wait_state(job_id, "QUEUED")
    first = p.api("POST", f"/v1/jobs/{job_id}/cancel")
    second = p.api("POST", f"/v1/jobs/{job_id}/cancel")
    assert first.status_code == 200 and second.status_code == 200
    assert p.wait_state(job_id, "CANCELLED", timeout=15)["cancel_requested"] is True
    # a terminal state is final: callbacks are refused
    hb = p.callback(job_id, "heartbeat", {"epoch": 1})
    assert hb.status_code == 409 and hb.json()["should_continue"] is False


def test_cancel_running_job_tells_trainer_to_stop(platform_any_db):
    p = platform_any_db
    job_id = p.create_job()["id"]
    _run_to_running(p, job_id)
    p.api("POST", f"/v1/jobs/{job_id}/cancel")
    hb = p.callback(job_id, "heartbeat", {"epoch": 1})
    assert hb.status_code == 200 and hb.json()["should_continue"] is False
    # the manual trainer exits on SIGTERM after the grace period; only then CANCELLED
    job = p.wait_state(job_id, "CANCELLED", timeout=30)
    assert job["finished_at"] is not None


def test_unknown_job_is_404_and_bad_input_is_422(platform):
    p = platform
    assert p.api("GET", "/v1/jobs/nope").status_code == 404
    assert p.api("POST", "/v1/jobs/nope/cancel").json() == {"detail": "job nope not found"}
    r = p.api("POST", "/v1/jobs", json={"framework": "manual", "task_type": "object_detection",
                                        "model_name": "m", "dataset_id": "d", "epochs": 0})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "epochs"]
    r = p.api("POST", "/v1/jobs", json={"framework": "manual", "task_type": "juggling",
                                        "model_name": "m", "dataset_id": "d"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "task_type"]
    r = p.api("POST", "/v1/jobs", json={"framework": "nosuch", "task_type": "object_detection",
                                        "model_name": "m", "dataset_id": "d"})
    assert r.status_code == 422 and "unknown framework 'nosuch'" in r.json()["detail"][0]["msg"]
    r = p.api("POST", "/v1/jobs", json={"framework": "manual", "task_type": "object_detection",
                                        "model_name": "m", "dataset_id": "d", "surprise": 1})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "surprise"]
    r = p.api("POST", "/v1/jobs", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    before = p.api("GET", "/v1/jobs", params={"limit": 500}).json()["items"]
    assert all(j["dataset_id"] != "d" for j in before)  # nothing refused was stored


def test_body_over_limit_is_413(platform):
    p = platform
    big = {"framework": "manual", "task_type": "object_detection", "model_name": "m",
           "dataset_id": "d", "config": {"blob": "x" * (p.settings.max_body_bytes + 10)}}
    r = p.api("POST", "/v1/jobs", json=big)
    assert r.status_code == 413 and "larger than" in r.json()["detail"]


def test_api_token_required(platform):
    p = platform
    assert p.http.get(f"{p.base_url}/v1/jobs").status_code == 401
    r = p.http.get(f"{p.base_url}/v1/jobs", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json() == {"detail": "invalid API token"}
    assert p.http.get(f"{p.base_url}/healthz").json()["status"] == "ok"


def test_openapi_describes_every_route(platform):
    spec = platform.http.get(f"{platform.base_url}/openapi.json").json()
    paths = spec["paths"]
    for path, method in [("/v1/jobs", "post"), ("/v1/jobs", "get"), ("/v1/jobs/{job_id}", "get"),
                         ("/v1/jobs/{job_id}/cancel", "post"), ("/v1/jobs/{job_id}/events", "get"),
                         ("/v1/jobs/{job_id}/metrics", "get"), ("/v1/jobs/{job_id}/logs", "get"),
                         ("/v1/jobs/{job_id}/heartbeat", "post"), ("/v1/jobs/{job_id}/event", "post"),
                         ("/v1/jobs/{job_id}/done", "post"), ("/v1/jobs/{job_id}/callbacks", "post"),
                         ("/v1/trainers", "get"), ("/healthz", "get")]:
        assert method in paths[path], (path, method)
    for schema in ("JobCreate", "JobView", "HeartbeatIn", "HeartbeatReply", "EventIn", "DoneIn",
                   "CallbackBatchIn", "CallbackBatchReply"):
        assert schema in spec["components"]["schemas"]
    assert platform.http.get(f"{platform.base_url}/docs").status_code == 200
