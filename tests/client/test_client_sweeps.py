"""The Python client's sweep calls, without a platform: the requests they send (method, path,
query, body), which are sent again and which are not, what a refusal raises, and waiting for a
sweep. Requests go to httpx's MockTransport (the client against the real platform: the CLI's
tests, tests/cli/test_cli_sweeps.py)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from ray_app.client import APIError, AsyncClient, TransportError
from ray_app.sweeps.models import SweepCreate, SweepState
from tests.client.mock_api import client_with

NOW = "2026-12-01T00:00:00Z"
SUMMARY = {"id": "s1", "name": "lr", "project_id": "p", "state": "PENDING", "metric": "accuracy", "mode": "max",
           "search": "random", "scheduler": None, "num_trials": 4, "max_concurrent": 2, "counts": {},
           "created_at": NOW, "updated_at": NOW}
TRIAL = {"trial": 1, "job_id": "j1", "state": "SUCCEEDED", "status": "succeeded", "params": {"learning_rate": 0.01},
         "epochs_run": 3, "last_metric": 0.8, "best_metric": 0.9, "history": [[1, 0.5], [2, 0.9], [3, 0.8]],
         "created_at": NOW}
SWEEP = {**SUMMARY, "space": {"learning_rate": {"loguniform": [1e-4, 1e-1]}},
         "job": {"framework": "fake", "epochs": 3}, "trials": []}
BODY = {"name": "lr", "project_id": "p",
        "job": {"framework": "fake", "task_type": "image_classification", "model_name": "fake-1",
                "dataset_id": "ds-test", "epochs": 3},
        "space": {"learning_rate": {"loguniform": [1e-4, 1e-1]}}, "metric": "accuracy"}


def test_create_sends_the_body_as_given_or_the_models_set_fields():
    seen = []

    def handler(request):
        seen.append((request.method, request.url.path, json.loads(request.content)))
        return httpx.Response(201, json=SWEEP)

    c = client_with(handler)
    view = c.create_sweep(BODY)
    assert view.id == "s1" and view.state is SweepState.PENDING and view.trials == []
    c.create_sweep(SweepCreate.model_validate(BODY))
    assert seen[0] == ("POST", "/v1/sweeps", BODY)
    assert seen[1] == ("POST", "/v1/sweeps", BODY)  # the model's defaults are left to the API


def test_creating_a_sweep_is_not_sent_twice_after_a_lost_answer():
    calls = []

    def handler(request):
        calls.append(request)
        raise httpx.ReadTimeout("no answer", request=request)

    with pytest.raises(TransportError, match="cannot reach http://vtp.test"):
        client_with(handler).create_sweep(BODY)
    assert len(calls) == 1


def test_a_422_names_the_field_and_is_not_retried():
    calls = []
    detail = [{"loc": ["body", "space", "learning_rate"], "msg": "a loguniform's low end must be above 0",
               "type": "value_error"}]

    def handler(request):
        calls.append(request)
        return httpx.Response(422, json={"detail": detail})

    with pytest.raises(APIError) as raised:
        client_with(handler).create_sweep({**BODY, "space": {"learning_rate": {"loguniform": [0, 1]}}})
    assert raised.value.status == 422 and raised.value.detail == detail and len(calls) == 1
    assert "body.space.learning_rate: a loguniform's low end must be above 0" in str(raised.value)


def test_get_list_cancel_and_the_jobs_of_a_sweep():
    seen = []

    def handler(request):
        seen.append((request.method, request.url.raw_path.decode().split("?")[0], dict(request.url.params)))
        if request.url.path == "/v1/sweeps":
            return httpx.Response(200, json={"items": [SUMMARY], "next_cursor": None})
        if request.url.path == "/v1/jobs":
            return httpx.Response(200, json={"items": [], "next_cursor": None})
        return httpx.Response(200, json={**SWEEP, "state": "CANCELLED", "trials": [TRIAL], "best": TRIAL})

    c = client_with(handler)
    got = c.get_sweep("a/b")
    assert got.state is SweepState.CANCELLED and got.best is not None and got.best.history[1] == (2, 0.9)
    page = c.list_sweeps(project_id="p", state="RUNNING", limit=5)
    assert [s.id for s in page.items] == ["s1"]
    c.list_sweeps()
    assert c.cancel_sweep("s1").state is SweepState.CANCELLED
    assert c.list_jobs(sweep_id="s1", limit=10).items == []
    assert seen == [
        ("GET", "/v1/sweeps/a%2Fb", {}),
        ("GET", "/v1/sweeps", {"project_id": "p", "state": "RUNNING", "limit": "5"}),
        ("GET", "/v1/sweeps", {}),
        ("POST", "/v1/sweeps/s1/cancel", {}),
        ("GET", "/v1/jobs", {"sweep_id": "s1", "limit": "10"}),
    ]


def test_reading_and_cancelling_are_retried_on_503():
    calls = []

    def handler(request):
        calls.append(request.url.path)
        if len(calls) % 2:
            return httpx.Response(503, json={"detail": "restarting"})
        return httpx.Response(200, json=SWEEP)

    c = client_with(handler)
    assert c.get_sweep("s1").id == "s1" and c.cancel_sweep("s1").id == "s1"
    assert calls == ["/v1/sweeps/s1"] * 2 + ["/v1/sweeps/s1/cancel"] * 2


def test_iter_sweeps_follows_the_cursor():
    cursors = []

    def handler(request):
        cursors.append(request.url.params.get("cursor"))
        if "cursor" not in request.url.params:
            return httpx.Response(200, json={"items": [SUMMARY], "next_cursor": "7"})
        return httpx.Response(200, json={"items": [{**SUMMARY, "id": "s0"}], "next_cursor": None})

    assert [s.id for s in client_with(handler).iter_sweeps(project_id="p")] == ["s1", "s0"]
    assert cursors == [None, "7"]


def test_wait_sweep_polls_until_final_and_tells_each_change():
    states = iter(["PENDING", "RUNNING", "RUNNING", "SUCCEEDED"])

    def handler(request):
        return httpx.Response(200, json={**SWEEP, "state": next(states)})

    changes = []
    view = client_with(handler).wait_sweep("s1", interval=0, on_change=lambda v: changes.append(v.state.value))
    assert view.state is SweepState.SUCCEEDED
    assert changes == ["PENDING", "RUNNING", "SUCCEEDED"]


def test_wait_sweep_gives_up_at_its_timeout():
    def handler(request):
        return httpx.Response(200, json={**SWEEP, "state": "RUNNING"})

    with pytest.raises(TimeoutError, match="sweep s1 still RUNNING"):
        client_with(handler).wait_sweep("s1", timeout=0, interval=0)


def test_async_client_sends_the_same_sweep_calls():
    seen = []
    states = iter(["RUNNING", "FAILED"])

    def handler(request):
        seen.append((request.method, request.url.path, dict(request.url.params)))
        if request.url.path == "/v1/sweeps" and request.method == "GET":
            return httpx.Response(200, json={"items": [SUMMARY], "next_cursor": None})
        if request.url.path == "/v1/jobs":
            return httpx.Response(200, json={"items": [], "next_cursor": None})
        if request.url.path == "/v1/sweeps/s1" and request.method == "GET":
            return httpx.Response(200, json={**SWEEP, "state": next(states, "FAILED")})
        return httpx.Response(201 if request.method == "POST" else 200, json=SWEEP)

    async def run():
        c = AsyncClient("http://vtp.test", token="t")
        c.http = httpx.AsyncClient(base_url="http://vtp.test", transport=httpx.MockTransport(handler))
        async with c:
            created = await c.create_sweep(BODY)
            page = await c.list_sweeps(state="PENDING")
            listed = [s.id async for s in c.iter_sweeps()]
            done = await c.wait_sweep("s1", interval=0)
            cancelled = await c.cancel_sweep("s1")
            jobs = await c.list_jobs(sweep_id="s1")
        return created, page, listed, done, cancelled, jobs

    created, page, listed, done, cancelled, jobs = asyncio.run(run())
    assert created.id == "s1" and [s.id for s in page.items] == ["s1"] and listed == ["s1"]
    assert done.state is SweepState.FAILED and cancelled.id == "s1" and jobs.items == []
    assert seen == [("POST", "/v1/sweeps", {}), ("GET", "/v1/sweeps", {"state": "PENDING"}),
                    ("GET", "/v1/sweeps", {}), ("GET", "/v1/sweeps/s1", {}), ("GET", "/v1/sweeps/s1", {}),
                    ("POST", "/v1/sweeps/s1/cancel", {}), ("GET", "/v1/jobs", {"sweep_id": "s1"})]
