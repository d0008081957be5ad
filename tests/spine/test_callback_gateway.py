"""The callback gateway (VTP_CALLBACK_PORT): trainer callbacks on plain uvicorn, batched into the
store, with the same authentication, error mapping and idempotency as the Serve routes."""

from __future__ import annotations

import concurrent.futures

import httpx

from ray_app.api.gateway import gateway_infos


def _gateway_info() -> dict:
    """The gateway's processes together: their URL, whether all are alive, items batched."""
    infos = gateway_infos()
    assert len(infos) == 2  # Settings.callback_processes' default
    assert len({i["pid"] for i in infos}) == 2 and len({i["url"] for i in infos}) == 1
    return {"url": infos[0]["url"], "alive": all(i["alive"] for i in infos),
            "items": sum(i["items"] for i in infos), "per_process": [i["items"] for i in infos]}


def _post(url: str, job_id: str, kind: str, body: dict, token: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{url}/v1/jobs/{job_id}/{kind}", json=body, headers=headers, timeout=30)


def test_fake_trainer_job_succeeds_with_its_callbacks_on_the_gateway(gw):
    p, url = gw
    before = _gateway_info()
    assert before["url"] == url and before["alive"]
    job_id = p.create_job(framework="fake", model_name="fake-net", task_type="image_classification",
                          epochs=3, config={"behaviour": "succeed", "epoch_seconds": 0.2})["id"]
    job = p.wait_state(job_id, "SUCCEEDED", timeout=120)
    assert job["progress"] == 100.0 and job["epoch"] == 3
    # started + 3 heartbeats + 3 checkpoint events went through the gateway's batches
    after = _gateway_info()
    assert after["items"] - before["items"] >= 7
    types = [e["event_type"] for e in p.events(job_id) if e["source"] == "trainer"]
    assert types == ["started"] + ["checkpoint_saved"] * 3 + ["done"]
    assert [m["epoch"] for m in p.api("GET", f"/v1/jobs/{job_id}/metrics").json()["items"]] == [1, 2, 3]


def test_gateway_refuses_and_maps_errors_per_request(gw):
    p, url = gw
    job_id = p.create_job()["id"]
    p.wait_state(job_id, "QUEUED")
    token = p.token(job_id)
    assert _post(url, job_id, "event", {"event_type": "started", "event_id": "s"}, token).status_code == 200
    assert _post(url, job_id, "heartbeat", {"epoch": 1}, "").status_code == 401
    assert _post(url, job_id, "heartbeat", {"epoch": 1}, p.token(job_id, attempt=2)).status_code == 401
    assert _post(url, "no-such-job", "heartbeat", {"epoch": 1}, p.token("no-such-job")).status_code == 404
    assert _post(url, job_id, "heartbeat", {"epoch": -1}, token).status_code == 422
    # the user API is not served here
    assert httpx.get(f"{url}/v1/jobs", headers={"Authorization": f"Bearer {p.api_token}"}).status_code == 404

    # concurrent heartbeats (batched together), each applied once, retries recognised; each
    # request is a new connection, which the kernel gives to either process (SO_REUSEPORT)
    before = _gateway_info()["per_process"]
    bodies = [{"event_id": f"hb-{i}", "epoch": i, "metrics": {"loss": 1 / i}} for i in range(1, 41)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        first = list(pool.map(lambda b: _post(url, job_id, "heartbeat", b, token), bodies))
        again = list(pool.map(lambda b: _post(url, job_id, "heartbeat", b, token), bodies[:10]))
    assert [r.status_code for r in first + again] == [200] * 50
    assert [r.json()["duplicate"] for r in first] == [False] * 40
    assert [r.json()["duplicate"] for r in again] == [True] * 10
    after = _gateway_info()["per_process"]
    assert all(a > b for a, b in zip(after, before)), (before, after)  # both processes served
    metrics = p.api("GET", f"/v1/jobs/{job_id}/metrics").json()["items"]
    assert [m["epoch"] for m in metrics] == list(range(1, 41))

    # a finished job: 409 and should_continue=false, from the gateway as from Serve
    assert _post(url, job_id, "done", {"status": "succeeded", "event_id": "d"}, token).status_code == 200
    late = _post(url, job_id, "heartbeat", {"epoch": 41}, token)
    assert late.status_code == 409 and late.json()["should_continue"] is False
