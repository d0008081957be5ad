"""PUT /v1/projects/{id}/quota, a job's priority and GET /v1/queue against the real platform: who
may set a quota and what a bad one is refused for (a 422 naming the field, nothing written), the
audit entry of a change, the priority a job and a sweep's trials keep, and what of the queue each
caller sees. Every job and sweep made here is cancelled at the end of its test."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.fixtures.platform import Platform
from tests.fixtures.teams import as_user, make_project, make_user
from tests.scheduling.conftest import Queue
from tests.sweeps.conftest import Sweeps

pytestmark = pytest.mark.timeout(120)

QUOTA_FIELDS = ("max_gpus", "max_cpus", "max_running_jobs", "weight", "preemptible")
# a GPU no node has: the job is never placed (nothing runs for it)
PARKED = {"framework": "manual", "task_type": "object_detection", "model_name": "any", "dataset_id": "ds-test",
          "epochs": 3, "num_gpus": 1}


def quota(p: Platform, project_id: str) -> dict[str, Any]:
    resp = p.api("GET", f"/v1/projects/{project_id}")
    assert resp.status_code == 200, resp.text
    return {k: resp.json()[k] for k in QUOTA_FIELDS}


def put_quota(p: Platform, project_id: str, body: Any, who: Any = None) -> Any:
    """PUT as the bootstrap admin, or as `who`; a str body is sent as it is (raw JSON text)."""
    kwargs: dict[str, Any] = ({"content": body, "headers": {"Content-Type": "application/json"}}
                              if isinstance(body, str) else {"json": body})
    url = f"/v1/projects/{project_id}/quota"
    return as_user(p, who, "PUT", url, **kwargs) if who else p.api("PUT", url, **kwargs)


def job_ids(p: Platform, project_id: str) -> set[str]:
    resp = p.api("GET", "/v1/jobs", params={"project_id": project_id, "limit": 500})
    assert resp.status_code == 200, resp.text
    return {j["id"] for j in resp.json()["items"]}


def named(resp: Any, field: str) -> list[dict[str, Any]]:
    """The 422's errors at the body's `field` (asserting there is one)."""
    assert resp.status_code == 422, resp.text
    errors = [d for d in resp.json()["detail"] if d["loc"][:2] == ["body", field]]
    assert errors, f"no error naming {field}: {resp.json()['detail']}"
    return errors


# ---------------------------------------------------------------- the quota


def test_a_platform_admin_sets_only_the_fields_given_and_the_change_is_audited(platform):
    p = platform
    started = datetime.now(UTC) - timedelta(seconds=5)
    project = make_project(p)
    admin = make_user(p, platform_admin=True)
    assert quota(p, project) == {"max_gpus": None, "max_cpus": None, "max_running_jobs": None, "weight": 1.0,
                                 "preemptible": True}

    resp = put_quota(p, project, {"max_cpus": 4, "max_running_jobs": 3}, admin)
    assert resp.status_code == 200, resp.text
    assert {k: resp.json()[k] for k in QUOTA_FIELDS} == quota(p, project) == {
        "max_gpus": None, "max_cpus": 4.0, "max_running_jobs": 3, "weight": 1.0, "preemptible": True}
    assert put_quota(p, project, {"weight": 2.5, "preemptible": False}, admin).status_code == 200
    assert quota(p, project) == {"max_gpus": None, "max_cpus": 4.0, "max_running_jobs": 3, "weight": 2.5,
                                 "preemptible": False}
    assert put_quota(p, project, {"max_cpus": None, "max_gpus": 1}, admin).status_code == 200  # null: unlimited
    assert quota(p, project) == {"max_gpus": 1.0, "max_cpus": None, "max_running_jobs": 3, "weight": 2.5,
                                 "preemptible": False}

    entries = p.api("GET", "/v1/audit", params={"action": "set_quota", "project_id": project,
                                                 "since": started.isoformat()})
    assert entries.status_code == 200, entries.text
    items = entries.json()["items"]
    assert len(items) == 3, items
    path = f"/v1/projects/{project}/quota"
    for e in items:
        assert (e["user_id"], e["method"], e["path"], e["resource"], e["outcome"]) == (
            admin.user_id, "PUT", path, f"quota:{project}", 200), e
    text = json.dumps(items)
    assert admin.token not in text and p.api_token not in text and "vtp_" not in text


@pytest.mark.parametrize("role", ["admin", "member", "viewer"])
def test_only_a_platform_admin_may_set_a_quota(platform, role):
    p = platform
    project = make_project(p)
    user = make_user(p, roles={project: role})
    before = quota(p, project)
    resp = put_quota(p, project, {"max_cpus": 1, "weight": 5, "preemptible": False}, user)
    assert resp.status_code == 403 and "platform admin" in resp.json()["detail"], resp.text
    assert quota(p, project) == before


def test_the_quota_of_an_unknown_project_is_a_404(platform):
    missing = f"proj-none-{time.monotonic_ns()}"
    resp = put_quota(platform, missing, {"max_cpus": 1})
    assert resp.status_code == 404 and missing in resp.json()["detail"], resp.text
    assert platform.api("GET", f"/v1/projects/{missing}").status_code == 404


BAD_QUOTAS: list[tuple[str, Any, str]] = [
    ("negative max_cpus", {"max_cpus": -1}, "max_cpus"),
    ("weight 0", {"weight": 0}, "weight"),
    ("weight null", {"weight": None}, "weight"),
    ("max_cpus NaN", '{"max_cpus": NaN}', "max_cpus"),
    ("max_gpus Infinity", '{"max_gpus": Infinity}', "max_gpus"),
    ("weight -Infinity", '{"weight": -Infinity}', "weight"),
    ("max_running_jobs 1.5", {"max_running_jobs": 1.5}, "max_running_jobs"),
    ("max_running_jobs true", {"max_running_jobs": True}, "max_running_jobs"),
    ("preemptible 'yes'", {"preemptible": "yes"}, "preemptible"),
    ("max_cpus as text", {"max_cpus": "4"}, "max_cpus"),
    ("unknown field", {"max_memory": 10}, "max_memory"),
]


@pytest.mark.parametrize(("body", "field"), [c[1:] for c in BAD_QUOTAS], ids=[c[0] for c in BAD_QUOTAS])
def test_a_bad_quota_is_a_422_naming_the_field_and_writes_nothing(platform, body, field):
    p = platform
    project = make_project(p)
    assert put_quota(p, project, {"max_cpus": 2, "weight": 3}).status_code == 200
    before = quota(p, project)
    # with a valid field beside it: nothing of the body is written, not even that
    if isinstance(body, dict):
        body = {"max_gpus": 7, **body}
    named(put_quota(p, project, body), field)
    assert quota(p, project) == before


# ---------------------------------------------------------------- a job's priority


@pytest.fixture
def parked(platform) -> Iterator[list[str]]:
    """Job ids to cancel at the end of the test."""
    ids: list[str] = []
    yield ids
    for job_id in ids:
        platform.api("POST", f"/v1/jobs/{job_id}/cancel")


def test_a_level_name_is_stored_as_its_number(platform, parked):
    project = make_project(platform)
    for given, stored in (("high", 80), ("Low", 20), (65, 65), (0, 0), (100, 100)):
        resp = platform.api("POST", "/v1/jobs", json={**PARKED, "project_id": project, "priority": given})
        assert resp.status_code == 201, resp.text
        parked.append(resp.json()["id"])
        assert resp.json()["priority"] == platform.job(parked[-1])["priority"] == stored, given


@pytest.mark.parametrize("priority", ["urgent", 101, -1, True, 1.5, None, ""], ids=repr)
def test_a_bad_priority_is_a_422_naming_it_and_writes_no_job(platform, priority):
    project = make_project(platform)
    before = job_ids(platform, project)
    resp = platform.api("POST", "/v1/jobs", json={**PARKED, "project_id": project, "priority": priority})
    named(resp, "priority")
    assert job_ids(platform, project) == before == set()


# ---------------------------------------------------------------- the queue as each caller sees it


def test_a_viewer_sees_their_projects_queue_only(platform, queue: Queue):
    p = platform
    cpus = queue.slot(1)  # one job of `cpus` fits in what is free: the others wait for it
    a, b, c = queue.project(), queue.project(), queue.project()
    viewer = make_user(p, roles={a: "viewer"})
    blocker = queue.submit(c, cpus, epochs=300, epoch_s=0.2, priority=100)  # none of the others preempts it
    p.wait_state(blocker, "RUNNING")
    in_a, in_b = queue.submit(a, cpus), queue.submit(b, cpus)

    def both_waiting() -> dict[str, Any] | None:
        q = queue.get()
        waiting = {j["job_id"] for j in q["jobs"] if j["state"] == "QUEUED"}
        return q if {in_a, in_b} <= waiting else None

    everything = queue.wait(both_waiting, "both jobs waiting in the queue")
    assert {in_a, in_b} <= {j["job_id"] for j in everything["jobs"]}
    assert {a, b} <= {r["project_id"] for r in everything["projects"]}

    seen = as_user(p, viewer, "GET", "/v1/queue")
    assert seen.status_code == 200, seen.text
    jobs, projects = seen.json()["jobs"], seen.json()["projects"]
    assert in_a in {j["job_id"] for j in jobs} and {j["project_id"] for j in jobs} == {a}, jobs
    assert [r["project_id"] for r in projects] == [a], projects
    assert projects[0]["waiting"] >= 1
    assert in_b not in seen.text and b not in seen.text and c not in seen.text


# ---------------------------------------------------------------- a sweep's trials


def test_a_sweeps_priority_reaches_its_trials(platform):
    sweeps = Sweeps(platform)
    sweep = sweeps.create(name="prio", job={"priority": "high", "epochs": 50},
                          space={"learning_rate": {"choice": [0.01]}}, max_concurrent=1)
    try:
        assert sweep["job"]["priority"] == 80
        trials = Queue(platform).wait(lambda: sweeps.trial_jobs(sweep["id"]), "the sweep's trial job", timeout=30)
        assert [t["priority"] for t in trials] == [80], trials
        assert platform.job(trials[0]["id"])["priority"] == 80
    finally:
        assert platform.api("POST", f"/v1/sweeps/{sweep['id']}/cancel").status_code == 200
        sweeps.wait(sweep["id"], timeout=60)
