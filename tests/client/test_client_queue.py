"""The Python client's scheduling calls without a platform (httpx's MockTransport): the queue as
read (positions, reasons, quotas), a project's quota set with only the fields given (None sent as
null: unlimited), what a refusal raises, which calls are sent again, and a job's priority in the
create body. The bodies sent are checked against the API's own models (QuotaSet, JobCreate)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from ray_app.client import APIError, AsyncClient
from ray_app.jobs.api_models import JobCreate
from ray_app.scheduling.models import QuotaSet
from tests.client.mock_api import client_with

NOW = "2026-12-01T00:00:00Z"


def entry(position: int | None, job_id: str, project: str, priority: int, name: str, waiting_for: str,
          state: str = "QUEUED") -> dict:
    return {"position": position, "job_id": job_id, "project_id": project, "priority": priority,
            "priority_name": name, "state": state, "waiting_for": waiting_for, "framework": "fake",
            "model_name": "fake-1", "workers": 1, "num_cpus": 1.0, "num_gpus": 0.0, "created_by": "alice",
            "created_at": NOW, "sweep_id": None, "preemptions": 0}


def share(project: str, quota: dict, in_use: dict, waiting: int, weight: float = 1.0) -> dict:
    return {"project_id": project, "quota": quota, "weight": weight, "preemptible": True, "in_use": in_use,
            "share": 0.25, "recent": {"cpus": 0.5, "gpus": 0.0}, "usage": {"cpu_seconds": 30.0, "gpu_seconds": 0.0},
            "waiting": waiting}


QUEUE = {
    "jobs": [entry(1, "a" * 16, "vision", 80, "high", "offered to the cluster"),
             entry(2, "b" * 16, "vision", 50, "normal", "the project's quota: 1/1 running jobs"),
             entry(None, "c" * 16, "nlp", 20, "low", "retry backoff", state="RETRYING")],
    "total": 3,
    "projects": [share("nlp", {"max_gpus": None, "max_cpus": None, "max_running_jobs": None},
                       {"gpus": 0.0, "cpus": 0.0, "running_jobs": 0}, 0),
                 share("vision", {"max_gpus": 0.0, "max_cpus": 4.0, "max_running_jobs": 1},
                       {"gpus": 0.0, "cpus": 1.0, "running_jobs": 1}, 1, weight=2.0)],
    "capacity": {"total": {"cpus": 8.0, "gpus": 0.0}, "free": {"cpus": 7.0, "gpus": 0.0}},
    "preemption": True, "fair_share_half_life_s": 3600.0, "decided_at": NOW, "pass_ms": 1.5,
}
PROJECT = {"id": "vision", "description": "", "created_at": NOW, "members": [], "your_role": None,
           "max_gpus": 2.0, "max_cpus": None, "max_running_jobs": None, "weight": 1.0, "preemptible": True}
JOB = {"framework": "fake", "task_type": "image_classification", "model_name": "fake-1", "dataset_id": "ds-test"}


def test_the_queue_is_read_in_order_with_each_jobs_reason_and_the_projects_use():
    seen = []

    def handler(request):
        seen.append((request.method, request.url.path, dict(request.url.params)))
        return httpx.Response(200, json=QUEUE)

    view = client_with(handler).get_queue()
    assert seen == [("GET", "/v1/queue", {})]
    assert [(j.position, j.job_id[0], j.priority_name, j.waiting_for) for j in view.jobs] == [
        (1, "a", "high", "offered to the cluster"), (2, "b", "normal", "the project's quota: 1/1 running jobs"),
        (None, "c", "low", "retry backoff")]
    nlp, vision = view.projects
    assert nlp.quota.max_cpus is None and nlp.quota.max_running_jobs is None  # unlimited
    assert (vision.quota.max_cpus, vision.in_use.cpus, vision.quota.max_running_jobs, vision.waiting) == (4, 1, 1, 1)
    assert vision.weight == 2 and view.preemption is True
    assert view.capacity is not None and (view.capacity.free.cpus, view.capacity.total.cpus) == (7, 8)
    assert view.model_dump(mode="json") == QUEUE  # nothing lost on the way


def test_no_controller_is_a_503_retried_then_raised_with_the_reason():
    calls = []

    def handler(request):
        calls.append(request)
        return httpx.Response(503, json={"detail": "the controller is not running: no queue to show"})

    with pytest.raises(APIError) as raised:
        client_with(handler).get_queue()
    assert raised.value.status == 503 and "controller is not running" in str(raised.value)
    assert len(calls) == 5  # a restarting replica is waited for: the API's own retries


def test_set_quota_sends_only_the_fields_given_and_none_as_null():
    sent = []

    def handler(request):
        sent.append((request.method, request.url.raw_path.decode(), json.loads(request.content)))
        return httpx.Response(200, json=PROJECT)

    c = client_with(handler)
    view = c.set_quota("vision", max_gpus=2)
    assert (view.max_gpus, view.max_cpus, view.weight, view.preemptible) == (2, None, 1, True)
    c.set_quota("vision", max_cpus=None, max_running_jobs=None)  # lifts both limits
    c.set_quota("team/a", weight=2.5, preemptible=False)
    c.set_quota("vision")
    assert sent == [
        ("PUT", "/v1/projects/vision/quota", {"max_gpus": 2}),
        ("PUT", "/v1/projects/vision/quota", {"max_cpus": None, "max_running_jobs": None}),
        ("PUT", "/v1/projects/team%2Fa/quota", {"weight": 2.5, "preemptible": False}),
        ("PUT", "/v1/projects/vision/quota", {}),
    ]
    # the API reads each as the fields it changes, the others staying
    assert [QuotaSet.model_validate(body).model_fields_set for _, _, body in sent] == [
        {"max_gpus"}, {"max_cpus", "max_running_jobs"}, {"weight", "preemptible"}, set()]


def test_set_quota_takes_its_fields_by_name_only():
    with pytest.raises(TypeError):
        client_with(lambda r: httpx.Response(200, json=PROJECT)).set_quota("vision", 2)  # type: ignore[misc]


@pytest.mark.parametrize(("status", "detail"), [(403, "this takes a platform admin"),
                                                (404, "project nope not found")])
def test_a_refused_quota_raises_the_apis_reason_and_is_not_sent_again(status, detail):
    calls = []

    def handler(request):
        calls.append(request)
        return httpx.Response(status, json={"detail": detail})

    with pytest.raises(APIError) as raised:
        client_with(handler).set_quota("nope", max_gpus=1)
    assert raised.value.status == status and raised.value.detail == detail and len(calls) == 1


def test_setting_a_quota_again_after_a_503_is_safe_and_done():
    calls = []

    def handler(request):
        calls.append(json.loads(request.content))
        return httpx.Response(503 if len(calls) == 1 else 200, json=PROJECT)

    assert client_with(handler).set_quota("vision", max_gpus=None).id == "vision"
    assert calls == [{"max_gpus": None}] * 2  # a PUT: the same again changes nothing


def test_a_jobs_priority_goes_in_its_create_body_by_name_or_number():
    bodies = []

    def handler(request):
        bodies.append(json.loads(request.content))
        return httpx.Response(422, json={"detail": "stop here"})

    c = client_with(handler)
    for body in (JobCreate(**JOB, priority="high"), JobCreate(**JOB, priority=65), JobCreate(**JOB),
                 {**JOB, "priority": "low"}):
        with pytest.raises(APIError):
            c.submit(body)
    assert [b.get("priority") for b in bodies] == [80, 65, None, "low"]  # unset: the API's default (normal)
    assert JobCreate.model_validate(bodies[3]).priority == 20


def test_async_client_sends_the_same_queue_calls():
    sent = []

    def handler(request):
        sent.append((request.method, request.url.path, json.loads(request.content) if request.content else None))
        return httpx.Response(200, json=QUEUE if request.url.path == "/v1/queue" else PROJECT)

    async def run():
        c = AsyncClient("http://vtp.test", token="t")
        c.http = httpx.AsyncClient(base_url="http://vtp.test", transport=httpx.MockTransport(handler))
        async with c:
            return await c.get_queue(), await c.set_quota("vision", max_running_jobs=3, max_cpus=None)

    view, project = asyncio.run(run())
    assert [j.position for j in view.jobs] == [1, 2, None] and project.id == "vision"
    assert sent == [("GET", "/v1/queue", None),
                    ("PUT", "/v1/projects/vision/quota", {"max_cpus": None, "max_running_jobs": 3})]
