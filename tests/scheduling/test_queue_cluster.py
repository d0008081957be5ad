"""Priorities, quotas and fair share on a real cluster (the fake trainer, CPUs scarce)."""

from __future__ import annotations

import time
from datetime import datetime

from tests.scheduling.conftest import Queue


def _started(p, job_id: str) -> datetime:
    return datetime.fromisoformat(p.wait_state(job_id, "SUCCEEDED", timeout=90)["started_at"])


def test_the_queue_offers_higher_priority_first_and_says_why_each_job_waits(platform, queue: Queue):
    cpus = queue.slot(1)  # one at a time: each start is its own pass, in the queue's order
    project = queue.project()
    # the top priority: nothing below may preempt it (tests/scheduling/test_preemption.py does)
    blockers = [queue.submit(project, cpus, epochs=200, epoch_s=0.2, priority=100)]
    for b in blockers:
        platform.wait_state(b, "RUNNING")
    order = [("low", "low"), ("normal-1", "normal"), ("high", "high"), ("normal-2", 50)]
    ids = {name: queue.submit(project, cpus, priority=prio) for name, prio in order}
    names = {v: k for k, v in ids.items()}

    def listed() -> list[dict] | None:
        jobs = [j for j in queue.get()["jobs"] if j["job_id"] in names]
        return jobs if len(jobs) == 4 and all(j["state"] == "QUEUED" for j in jobs) else None

    jobs = queue.wait(listed, "the four jobs in the queue")
    assert [names[j["job_id"]] for j in jobs] == ["high", "normal-1", "normal-2", "low"]
    assert [j["position"] for j in jobs] == [1, 2, 3, 4]
    assert {j["priority_name"] for j in jobs} == {"high", "normal", "low"}
    assert all(j["waiting_for"] == f"waiting for {cpus:g} CPUs to be free" for j in jobs), [j["waiting_for"] for j in jobs]
    # the job says so too, with an event when its reason changed
    job = platform.job(ids["low"])
    assert job["state"] == "QUEUED" and job["wait_reason"] == jobs[-1]["waiting_for"] and job["priority"] == 20
    assert any(e["event_type"] == "waiting" for e in platform.events(ids["low"]))

    for b in blockers:  # room for one at a time: high, normal-1, normal-2, then low
        platform.api("POST", f"/v1/jobs/{b}/cancel")
    started = {name: _started(platform, job_id) for name, job_id in ids.items()}
    assert started["high"] < started["normal-1"] < started["normal-2"] < started["low"], started
    assert any(e["event_type"] == "scheduled" for e in platform.events(ids["low"]))


def test_a_project_never_holds_more_than_its_quota_and_its_jobs_wait_saying_so(platform, queue: Queue):
    cpus = queue.slot(4)
    capped = queue.project(max_running_jobs=1, max_cpus=cpus * 2)
    other = queue.project()
    ids = [queue.submit(capped, cpus, epochs=3, epoch_s=0.3) for _ in range(4)]
    free_rider = queue.submit(other, cpus, epochs=3, epoch_s=0.3)
    samples, reasons = [], set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # sampled all along, not only at the end
        jobs = queue.jobs(capped)
        running = [j for j in jobs if j["state"] == "RUNNING"]
        samples.append((len(running), sum(j["num_cpus"] for j in running)))
        reasons |= {j["wait_reason"] for j in jobs if j["state"] == "QUEUED" and j["wait_reason"]}
        if all(j["state"] in ("SUCCEEDED", "FAILED", "CANCELLED") for j in jobs):
            break
        time.sleep(0.1)
    assert all(platform.job(i)["state"] == "SUCCEEDED" for i in [*ids, free_rider])
    assert len(samples) > 20 and max(n for n, _ in samples) == 1, samples
    assert max(c for _, c in samples) <= cpus * 2 + 1e-6
    assert f"project {capped}: 1/1 running jobs" in reasons, reasons
    # the other project was not held back by it: it ran while the capped one waited
    assert platform.job(free_rider)["started_at"] < platform.job(ids[-1])["started_at"]
    q = queue.get()
    shown = next(p for p in q["projects"] if p["project_id"] == capped)
    assert shown["quota"] == {"max_gpus": None, "max_cpus": cpus * 2, "max_running_jobs": 1}
    assert shown["usage"]["cpu_seconds"] > 0  # it used the cluster, and fair share remembers it


def test_two_projects_submitting_at_once_share_the_cluster_by_their_weights(platform, queue: Queue):
    """Weights 2 and 1 on three slots: while both wait, the first holds 2/3 of the slot-time
    (tolerance 0.12: a slot is handed over about every second, and a sample is every 0.2 s)."""
    cpus = queue.slot(3)
    heavy, light = queue.project(weight=2), queue.project(weight=1)
    ids = {heavy: [], light: []}
    for _ in range(9):  # alternately, as two teams submitting at the same time
        for project in (heavy, light):
            ids[project].append(queue.submit(project, cpus, epochs=4, epoch_s=0.4))
    held = {heavy: 0, light: 0}
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        jobs = {p: queue.jobs(p) for p in ids}
        if not all(any(j["state"] in ("PENDING", "QUEUED") and j["started_at"] is None for j in jobs[p])
                   for p in ids):
            break  # one project has nothing left waiting: shares no longer compete
        for p in ids:
            held[p] += sum(j["state"] == "RUNNING" for j in jobs[p])
        time.sleep(0.2)
    total = held[heavy] + held[light]
    assert total > 30, held
    assert abs(held[heavy] / total - 2 / 3) <= 0.12, held
    for job_ids in ids.values():
        for job_id in job_ids:
            assert platform.wait_final(job_id, timeout=120)["state"] == "SUCCEEDED"


def test_a_controller_restart_keeps_the_queue_and_the_usage(platform, queue: Queue):
    import ray

    from ray_app.config import CONTROLLER_ACTOR, NAMESPACE

    cpus = queue.slot(2)
    project = queue.project()
    blockers = [queue.submit(project, cpus, epochs=300, epoch_s=0.2, priority=100) for _ in range(2)]
    for b in blockers:
        platform.wait_state(b, "RUNNING")
    waiting = [queue.submit(project, cpus, priority=prio) for prio in ("low", "high", "normal")]

    def settled() -> dict | None:  # all three listed, and usage written at least once (every 5 s)
        q = queue.get()
        mine = [j["job_id"] for j in q["jobs"] if j["job_id"] in waiting]
        used = next((p["usage"]["cpu_seconds"] for p in q["projects"] if p["project_id"] == project), 0)
        return q if len(mine) == 3 and used > 2 * cpus * 6 else None

    before = queue.wait(settled, "the queue and some usage", timeout=60)
    order = [j["job_id"] for j in before["jobs"] if j["job_id"] in waiting]
    assert order == [waiting[1], waiting[2], waiting[0]]
    used = next(p["usage"]["cpu_seconds"] for p in before["projects"] if p["project_id"] == project)

    ray.kill(ray.get_actor(CONTROLLER_ACTOR, namespace=NAMESPACE), no_restart=False)  # Ray restarts it

    def again() -> dict | None:
        q = platform.api("GET", "/v1/queue")
        if q.status_code != 200 or q.json()["decided_at"] is None or q.json()["decided_at"] <= before["decided_at"]:
            return None
        return q.json() if any(j["job_id"] in waiting for j in q.json()["jobs"]) else None

    after = queue.wait(again, "the restarted controller's queue", timeout=90)
    assert [j["job_id"] for j in after["jobs"] if j["job_id"] in waiting] == order
    assert all(platform.job(j)["state"] == "QUEUED" for j in waiting)
    # its usage goes on from what was written (at most 5 s of it is lost), not from nothing
    used_after = next(p["usage"]["cpu_seconds"] for p in after["projects"] if p["project_id"] == project)
    assert used_after >= used - 2 * cpus * 5, (used, used_after)
    # the running jobs were followed again, not restarted
    assert all(platform.job(b)["attempt"] == 1 and platform.job(b)["state"] == "RUNNING" for b in blockers)
