"""Callback authentication and idempotency over real HTTP (both databases)."""

from __future__ import annotations

import base64
import json

import pytest


def _unsigned(claims: dict) -> str:
    """A token with alg "none" and no signature, which a careless verifier would accept."""
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{enc({'alg': 'none', 'typ': 'JWT'})}.{enc(claims)}."


@pytest.fixture
def running(platform_any_db):
    p = platform_any_db
    job_id = p.create_job()["id"]
    p.wait_state(job_id, "QUEUED")
    assert p.callback(job_id, "event", {"event_type": "started"}).status_code == 200
    return p, job_id


def _bad_tokens(p, job_id):
    other = p.create_job()["id"]
    return {
        "missing": ("", "missing bearer token"),
        "malformed": ("not-a-jwt", "malformed"),
        "forged": (p.token(job_id, secret="not-the-platform-secret-at-all-0123456789"), "signature is invalid"),
        "expired": (p.token(job_id, ttl_s=-10), "expired"),
        "other_job": (p.token(other), "another job"),
        "stale_attempt": (p.token(job_id, attempt=2), "attempt 2"),
        "alg_none": (_unsigned({"sub": job_id, "attempt": 1, "aud": "vtp-callback", "exp": 4102444800}), ""),
    }


@pytest.mark.parametrize("kind,body", [
    ("heartbeat", {"epoch": 1}),
    ("event", {"event_type": "dataset_loaded"}),
    ("done", {"status": "succeeded"}),
    ("callbacks", {"items": [{"kind": "heartbeat", "body": {"epoch": 1}}]}),
])
def test_each_bad_token_gets_401_with_reason(running, kind, body):
    p, job_id = running
    for case, (token, reason) in _bad_tokens(p, job_id).items():
        r = p.callback(job_id, kind, body, token=token)
        assert r.status_code == 401, (case, r.status_code, r.text)
        assert reason in r.json()["detail"], (case, r.json())
    assert p.job(job_id)["state"] == "RUNNING"  # nothing refused was applied


def test_retried_callbacks_applied_once(running):
    p, job_id = running
    hb = {"event_id": "hb-1", "epoch": 1, "total_epochs": 3, "metrics": {"loss": 0.7}}
    assert p.callback(job_id, "heartbeat", hb).json()["duplicate"] is False
    assert p.callback(job_id, "heartbeat", {**hb, "metrics": {"loss": 0.1}}).json()["duplicate"] is True
    ev = {"event_id": "ev-1", "event_type": "dataset_loaded", "message": "64 images"}
    assert p.callback(job_id, "event", ev).json() == {"status": "ok", "duplicate": False}
    assert p.callback(job_id, "event", ev).json() == {"status": "ok", "duplicate": True}
    done = {"event_id": "done-1", "status": "succeeded", "final_metrics": {"acc": 1.0}}
    assert p.callback(job_id, "done", done).json()["duplicate"] is False
    assert p.callback(job_id, "done", done).json() == {"status": "ok", "state": "SUCCEEDED", "duplicate": True}
    events = [e for e in p.events(job_id) if e["event_type"] == "dataset_loaded"]
    assert len(events) == 1
    metrics = p.api("GET", f"/v1/jobs/{job_id}/metrics").json()["items"]
    assert [m["metrics"] for m in metrics] == [{"loss": 0.7}]


def test_second_different_done_is_409_and_heartbeat_after_terminal_is_409(running):
    p, job_id = running
    assert p.callback(job_id, "done", {"event_id": "a", "status": "succeeded"}).status_code == 200
    r = p.callback(job_id, "done", {"event_id": "b", "status": "failed", "error": "late"})
    assert r.status_code == 409 and "already reported done" in r.json()["detail"]
    hb = p.callback(job_id, "heartbeat", {"epoch": 2})
    assert hb.status_code == 409 and hb.json()["should_continue"] is False
    assert p.job(job_id)["state"] == "SUCCEEDED" and p.job(job_id)["error"] is None


def test_callback_body_is_validated(running):
    p, job_id = running
    r = p.callback(job_id, "heartbeat", {"epoch": -1})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "epoch"]
    r = p.callback(job_id, "done", {"status": "maybe"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "status"]
    r = p.callback(job_id, "event", {"event_type": "Bad Type!"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "event_type"]
    r = p.callback(job_id, "heartbeat", {"attempt": 2, "epoch": 1})
    assert r.status_code == 401 and "attempt 2" in r.json()["detail"]


def test_queued_callbacks_in_one_request_apply_in_order_each_once(running):
    """POST .../callbacks: what a trainer's backlog sends after a slow or unreachable backend."""
    p, job_id = running
    items = [
        {"kind": "heartbeat", "body": {"event_id": "b-hb1", "epoch": 1, "total_epochs": 2, "metrics": {"loss": 0.9}}},
        {"kind": "event", "body": {"event_id": "b-ev1", "event_type": "validation_complete", "data": {"epoch": 1}}},
        {"kind": "heartbeat", "body": {"event_id": "b-hb2", "epoch": 2, "total_epochs": 2, "metrics": {"loss": 0.5}}},
        {"kind": "event", "body": {"event_id": "b-ev1", "event_type": "validation_complete", "data": {"epoch": 1}}},
    ]
    r = p.callback(job_id, "callbacks", {"items": items})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["status"] for x in body["results"]] == [200, 200, 200, 200]
    assert [x["reply"]["duplicate"] for x in body["results"]] == [False, False, False, True]
    assert body["should_continue"] is True
    # the same batch again (its reply was lost): every item recognised, nothing applied twice
    again = p.callback(job_id, "callbacks", {"items": items}).json()
    assert [x["reply"]["duplicate"] for x in again["results"]] == [True, True, True, True]
    metrics = p.api("GET", f"/v1/jobs/{job_id}/metrics").json()["items"]
    assert [(m["epoch"], m["metrics"]) for m in metrics] == [(1, {"loss": 0.9}), (2, {"loss": 0.5})]
    assert len([e for e in p.events(job_id) if e["event_type"] == "validation_complete"]) == 1
    assert p.job(job_id)["epoch"] == 2 and p.job(job_id)["progress"] == 100
    # after the end, a heartbeat in a batch is refused on its own (409) and the trainer told to stop
    assert p.callback(job_id, "done", {"event_id": "b-done", "status": "succeeded"}).status_code == 200
    late = p.callback(job_id, "callbacks", {"items": [{"kind": "heartbeat", "body": {"epoch": 3}}]}).json()
    assert late["results"][0]["status"] == 409 and late["should_continue"] is False


def test_done_closes_a_batch_in_the_same_request(running):
    """A trainer ending behind a slow backend: its last events and its done in one round trip."""
    p, job_id = running
    items = [
        {"kind": "heartbeat", "body": {"event_id": "c-hb", "epoch": 2, "total_epochs": 2, "metrics": {"loss": 0.4}}},
        {"kind": "event", "body": {"event_id": "c-ev", "event_type": "checkpoint_saved", "data": {"name": "best"}}},
        {"kind": "done", "body": {"event_id": "c-done", "status": "succeeded", "final_metrics": {"loss": 0.4}}},
    ]
    body = p.callback(job_id, "callbacks", {"items": items}).json()
    assert [x["status"] for x in body["results"]] == [200, 200, 200]
    assert body["results"][2]["reply"] == {"state": "SUCCEEDED", "duplicate": False}
    job = p.job(job_id)
    assert job["state"] == "SUCCEEDED" and job["final_metrics"] == {"loss": 0.4} and job["epoch"] == 2
    types = [e["event_type"] for e in p.events(job_id) if e["source"] == "trainer"]
    assert types[-2:] == ["checkpoint_saved", "done"]  # in order: the events before the end
    # the reply was lost and the trainer sends it again: done is recognised, the job being final
    # refuses the rest (as their own routes would), and nothing is applied twice
    again = p.callback(job_id, "callbacks", {"items": items}).json()
    assert [x["status"] for x in again["results"]] == [409, 409, 200]
    assert again["results"][2]["reply"]["duplicate"] is True and again["should_continue"] is False
    assert [e["event_type"] for e in p.events(job_id) if e["source"] == "trainer"] == types
    assert [m["epoch"] for m in p.api("GET", f"/v1/jobs/{job_id}/metrics").json()["items"]] == [2]


def test_callback_batch_is_validated(running):
    p, job_id = running
    assert p.callback(job_id, "callbacks", {"items": []}).status_code == 422
    r = p.callback(job_id, "callbacks", {"items": [{"kind": "done", "body": {"status": "succeeded"}},
                                                   {"kind": "heartbeat", "body": {"epoch": 1}}]})
    assert r.status_code == 422 and "done can only be the last item" in r.text  # nothing after the end
    r = p.callback(job_id, "callbacks", {"items": [{"kind": "heartbeat", "body": {"epoch": -1}}]})
    assert r.status_code == 422 and "epoch" in r.json()["detail"][0]["loc"]
    r = p.callback(job_id, "callbacks", {"items": [{"kind": "event", "body": {"attempt": 2, "event_type": "x"}}]})
    assert r.status_code == 401 and "attempt 2" in r.json()["detail"]
    assert p.job(job_id)["state"] == "RUNNING"
