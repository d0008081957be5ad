"""GET /v1/jobs/{id}/stream (Server-Sent Events) against the real platform: what a viewer of a
job receives live, in order, how a dropped stream resumes (Last-Event-ID), and how it ends. The
CLI's `jobs watch` and `logs --follow` read this stream (tests/cli/test_cli_local.py)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from ray_app.client import APIError, Client
from ray_app.client._stream import parse
from tests.spine.test_hostile_input import running_job

pytestmark = pytest.mark.timeout(180)


def test_a_job_streams_its_changes_in_order_and_ends_when_final(platform):
    p = platform
    job_id = p.create_job(framework="fake", model_name="fake-stream", task_type="image_classification", epochs=3,
                          config={"behaviour": "succeed", "epoch_seconds": 0.3})["id"]
    with Client(p.base_url, p.api_token) as client:
        messages = list(client.stream(job_id))
    kinds = [m.kind for m in messages]
    assert kinds[0] == "job" and kinds[-1] == "end" and kinds.count("end") == 1
    assert messages[-1].job.state == "SUCCEEDED" and messages[-1].job.output_complete
    states = [m.job.state for m in messages if m.kind == "job"]
    assert states[-1] == "SUCCEEDED" and "RUNNING" in states
    epochs = [m.job.epoch for m in messages if m.kind == "job" and m.job.epoch]
    assert epochs == sorted(epochs) and epochs[-1] == 3  # progress as it happened
    events = [m.data for m in messages if m.kind == "event"]
    assert [e.seq for e in events] == sorted({e.seq for e in events})  # each once, in order
    assert {"created", "started"} <= {e.event_type for e in events}
    assert [e.seq for e in events] == [e["seq"] for e in p.events(job_id)]  # all of them
    lines = [m.data.line for m in messages if m.kind == "log"]
    assert lines == p.logs(job_id) and any("fake trainer attempt 1" in line for line in lines)
    positions = [tuple(map(int, m.id.split("-"))) for m in messages]
    assert positions == sorted(positions)


def test_a_heartbeat_reaches_an_open_stream_and_a_reconnect_resumes_where_it_was(platform):
    p = platform
    job_id = running_job(p)
    got: list = []
    stop = threading.Event()

    def listen() -> None:
        with httpx.Client(timeout=30) as http, http.stream(
                "GET", f"{p.base_url}/v1/jobs/{job_id}/stream", params={"logs": "false"},
                headers={"Authorization": f"Bearer {p.api_token}"}) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            for message in parse(r.iter_lines()):
                got.append((time.monotonic(), message))
                if stop.is_set():
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    deadline = time.monotonic() + 30
    while not any(m.kind == "event" and m.data.event_type == "started" for _, m in got):
        assert time.monotonic() < deadline, got
        time.sleep(0.05)
    sent = time.monotonic()
    body = {"event_id": "hb-stream-1", "epoch": 2, "total_epochs": 5, "metrics": {"loss": 0.25}}
    assert p.callback(job_id, "heartbeat", body).status_code == 200
    while not any(m.kind == "job" and m.job.epoch == 2 for _, m in got):
        assert time.monotonic() < deadline, [m.kind for _, m in got]
        time.sleep(0.02)
    arrived = next(t for t, m in got if m.kind == "job" and m.job.epoch == 2)
    assert arrived - sent < 2.0  # polled every 0.2 s on the server: well within
    assert next(m for _, m in got if m.kind == "job" and m.job.epoch == 2).job.latest_metrics == {"loss": 0.25}
    stop.set()
    assert p.callback(job_id, "event", {"event_id": "ev-stream-1", "event_type": "note",
                                        "message": "after the stream was left"}).status_code == 200
    listener.join(timeout=10)

    # reconnect from the last message seen: the job's current state, then only what came after
    last = [m for _, m in got][-1]
    with httpx.Client(timeout=30) as http, http.stream(
            "GET", f"{p.base_url}/v1/jobs/{job_id}/stream", params={"logs": "false"},
            headers={"Authorization": f"Bearer {p.api_token}", "Last-Event-ID": last.id}) as r:
        resumed = []
        for message in parse(r.iter_lines()):
            resumed.append(message)
            if message.kind == "event" and message.data.message == "after the stream was left":
                break
    assert resumed[0].kind == "job" and resumed[0].job.epoch == 2
    seen = {m.data.seq for _, m in got if m.kind == "event"}
    after = int(last.id.split("-")[0])
    again = [m.data.seq for m in resumed if m.kind == "event"]
    assert again and not seen & set(again) and min(again) == after + 1  # nothing twice, nothing lost
    p.api("POST", f"/v1/jobs/{job_id}/cancel")


def test_stream_refusals(platform):
    p = platform
    r = httpx.get(f"{p.base_url}/v1/jobs/no-such-job/stream", headers={"Authorization": f"Bearer {p.api_token}"})
    assert r.status_code == 404
    assert httpx.get(f"{p.base_url}/v1/jobs/no-such-job/stream").status_code == 401
    bad = httpx.get(f"{p.base_url}/v1/jobs/x/stream", params={"events_after": -1},
                    headers={"Authorization": f"Bearer {p.api_token}"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "events_after"]
    with Client(p.base_url, p.api_token) as client, pytest.raises(APIError) as info:
        next(client.stream("no-such-job"))
    assert info.value.status == 404
