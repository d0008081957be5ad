"""GET /v1/stream/jobs (Server-Sent Events) and GET /v1/jobs?id_prefix= against the real platform:
what a console's live job list relies on. The stream says where it stands first (`ready`), then
sends every job as it changes (created, queued, running, its progress, a cancel and its end), and a
reconnect with Last-Event-ID (or ?since=) continues exactly after what was seen: nothing twice,
nothing lost while away."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from ray_app.client import Client
from ray_app.client._stream import messages

pytestmark = pytest.mark.timeout(180)

STREAM = "/v1/stream/jobs"


@dataclass(frozen=True)
class Message:
    kind: str
    id: str | None
    data: dict[str, Any]
    at: float  # when it was read (time.monotonic())


class Reader:
    """The messages of one open stream, read as the test asks for them."""

    def __init__(self, lines: Iterator[str]):
        self.messages = messages(lines, pings=True)
        self.seen: list[Message] = []

    def next(self, timeout: float = 30.0) -> Message:
        """The next message (pings skipped). A ping every 15 s keeps lines coming, so a late
        message fails the test at most that long after its deadline."""
        deadline = time.monotonic() + timeout
        for message in self.messages:
            assert time.monotonic() < deadline, f"no message within {timeout:g}s; seen {self.kinds()}"
            if message is not None:
                kind, ident, data = message
                self.seen.append(Message(kind, ident, json.loads(data), time.monotonic()))
                return self.seen[-1]
        raise AssertionError(f"the stream ended; seen {self.kinds()}")

    def until(self, wanted: Callable[[Message], bool], timeout: float = 30.0) -> Message:
        deadline = time.monotonic() + timeout
        while True:
            message = self.next(max(deadline - time.monotonic(), 0.01))
            if wanted(message):
                return message

    def job(self, job_id: str, wanted: Callable[[dict[str, Any]], bool] = lambda _: True,
            timeout: float = 30.0) -> Message:
        """The job's message that shows it as `wanted`: the last one seen when it does (a job
        changed twice between two reads of the server comes once, as it is then), else the next."""
        latest = next((m for m in reversed(self.seen) if m.kind == "job" and m.data["id"] == job_id), None)
        if latest is not None and wanted(latest.data):
            return latest
        return self.until(lambda m: m.kind == "job" and m.data["id"] == job_id and wanted(m.data), timeout)

    def kinds(self) -> list[str]:
        return [f"{m.kind}:{m.data.get('id', '')}:{m.data.get('state', '')}" for m in self.seen]


@contextmanager
def stream(p, headers: dict[str, str] | None = None, **params: str) -> Iterator[Reader]:
    with httpx.Client(timeout=60) as http, http.stream(
            "GET", f"{p.base_url}{STREAM}", params=params,
            headers={"Authorization": f"Bearer {p.api_token}", **(headers or {})}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), r.status_code
        yield Reader(r.iter_lines())


def position(message: Message) -> tuple[int, int]:
    assert message.id is not None
    micros, num = message.id.split("-")
    return int(micros), int(num)


def project() -> str:
    return f"list-stream-{uuid.uuid4().hex[:8]}"


def test_a_job_list_stream_shows_each_change_live(platform):
    p = platform
    with stream(p) as s:
        ready = s.next()
        assert ready.kind == "ready" and ready.data == {"position": ready.id}
        job_id = p.create_job(project_id=project())["id"]
        created = s.job(job_id)
        assert created.data["state"] in ("PENDING", "QUEUED") and position(created) > position(ready)
        s.job(job_id, lambda j: j["state"] == "QUEUED")  # the controller queues it
        assert p.callback(job_id, "event", {"event_type": "started"}).status_code == 200
        s.job(job_id, lambda j: j["state"] == "RUNNING")

        sent = time.monotonic()
        body = {"event_id": "ls-hb-1", "epoch": 2, "total_epochs": 5, "metrics": {"loss": 0.25}}
        assert p.callback(job_id, "heartbeat", body).status_code == 200
        progress = s.job(job_id, lambda j: j["epoch"] == 2)
        assert progress.at - sent < 2.0  # polled every 0.5 s on the server
        assert progress.data["latest_metrics"] == {"loss": 0.25} and progress.data["progress"] == 40.0

        assert p.api("POST", f"/v1/jobs/{job_id}/cancel").status_code == 200
        s.job(job_id, lambda j: j["cancel_requested"], timeout=5)
        # the manual trainer exits on SIGTERM; then the job is CANCELLED, its attempt ended
        final = s.job(job_id, lambda j: j["state"] == "CANCELLED", timeout=60)
        assert [a["outcome"] for a in final.data["attempts"]] == ["cancelled"]
        # the message is the job as GET /v1/jobs/{id} shows it (but for what the runner records
        # once the process is gone, without touching the job's row: its exit, output_complete)
        shown = p.job(job_id)
        assert final.data["updated_at"] == shown["updated_at"]
        assert {k: v for k, v in final.data.items() if k not in ("attempts", "output_complete")} == \
            {k: v for k, v in shown.items() if k not in ("attempts", "output_complete")}
    positions = [position(m) for m in s.seen]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)


def test_a_reconnect_continues_after_what_was_seen(platform):
    p = platform
    proj = project()
    with stream(p) as s:
        ready = s.next()
        first = p.create_job(project_id=proj)["id"]
        s.job(first, lambda j: j["state"] == "QUEUED")
    seen = s.seen
    last = seen[-1]
    # while nobody listens: a new job, and a cancel of the first
    second = p.create_job(project_id=proj)["id"]
    assert p.api("POST", f"/v1/jobs/{first}/cancel").status_code == 200
    p.wait_state(first, "CANCELLED", timeout=30)

    for how in ({"headers": {"Last-Event-ID": last.id}}, {"since": last.id},
                {"headers": {"Last-Event-ID": last.id}, "since": ready.id}):  # the header wins
        with stream(p, **how) as again:
            resumed = again.next()
            assert resumed.kind == "ready" and resumed.id == last.id and resumed.data == {"position": last.id}
            again.job(first, lambda j: j["state"] == "CANCELLED")
            again.job(second)  # created while away: not lost
        changes = [m for m in again.seen if m.kind == "job"]
        assert all(position(m) > position(last) for m in changes)  # nothing seen twice
        assert not {m.id for m in seen} & {m.id for m in changes}

    # from where the first stream started: everything since, the first job's creation included
    with stream(p, since=ready.id) as replay:
        assert replay.next().id == ready.id
        replay.job(first)
    p.api("POST", f"/v1/jobs/{second}/cancel")


def test_without_a_position_the_stream_starts_now(platform):
    p = platform
    before = p.create_job(project_id=project())["id"]
    p.wait_state(before, "QUEUED")
    for headers in ({}, {"Last-Event-ID": "not-a-position"}):  # one not of ours is ignored
        with stream(p, headers=headers) as s:
            ready = s.next()
            assert ready.kind == "ready" and position(ready) >= (0, 0)
            after = p.create_job(project_id=project())["id"]
            s.job(after)
        assert before not in {m.data.get("id") for m in s.seen}  # changed before: not sent
        p.api("POST", f"/v1/jobs/{after}/cancel")
    p.api("POST", f"/v1/jobs/{before}/cancel")


def test_list_stream_refusals(platform):
    p = platform
    assert httpx.get(f"{p.base_url}{STREAM}").status_code == 401
    assert httpx.get(f"{p.base_url}{STREAM}", headers={"Authorization": "Bearer wrong"}).status_code == 401
    for since in ("yesterday", "12", "1-2-3", "-1-2", "1" * 19 + "-1"):
        bad = httpx.get(f"{p.base_url}{STREAM}", params={"since": since},
                        headers={"Authorization": f"Bearer {p.api_token}"})
        assert bad.status_code == 422, since
        assert [e["loc"] for e in bad.json()["detail"]] == [["query", "since"]]
    spec = p.http.get(f"{p.base_url}/openapi.json").json()
    assert "get" in spec["paths"][STREAM]


def test_id_prefix_finds_jobs_by_the_start_of_their_id(platform):
    p = platform
    proj = project()
    ids = [p.create_job(project_id=proj)["id"] for _ in range(4)]

    def listed(**params: Any) -> list[str]:
        found, cursor = [], None
        while True:
            r = p.api("GET", "/v1/jobs", params={**params, **({"cursor": cursor} if cursor else {}), "limit": 2})
            assert r.status_code == 200, r.text
            found += [j["id"] for j in r.json()["items"]]
            cursor = r.json()["next_cursor"]
            if cursor is None:
                return found

    for job_id in ids:
        assert listed(id_prefix=job_id) == [job_id]
        assert listed(id_prefix=job_id, project_id=proj) == [job_id]
        assert listed(id_prefix=job_id, project_id=f"other-{proj}") == []
        short = listed(id_prefix=job_id[:2])  # every job whose id starts so, in pages, newest first
        assert job_id in short and all(i.startswith(job_id[:2]) for i in short)
        assert short == [j["id"] for j in p.api("GET", "/v1/jobs", params={"id_prefix": job_id[:2], "limit": 500})
                         .json()["items"]]
    assert listed(id_prefix=ids[0][:1], project_id=proj) == [i for i in ids[::-1] if i[0] == ids[0][0]]
    with Client(p.base_url, p.api_token) as client:  # the Python client (and so `vtp jobs list --id-prefix`)
        assert [j.id for j in client.list_jobs(id_prefix=ids[1], project_id=proj).items] == [ids[1]]
    # `_` is a character, not a wildcard: ids are hex, so nothing starts with one
    assert listed(id_prefix=f"{ids[0][0]}_{ids[0][2]}") == []
    assert listed(id_prefix=f"{ids[0][:3]}_") == []
    for bad in ("%", f"{ids[0][0]}%", "", "a" * 65, "a b", "é"):
        r = p.api("GET", "/v1/jobs", params={"id_prefix": bad})
        assert r.status_code == 422, bad
        assert [e["loc"] for e in r.json()["detail"]] == [["query", "id_prefix"]]
    for job_id in ids:
        p.api("POST", f"/v1/jobs/{job_id}/cancel")
