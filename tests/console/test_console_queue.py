"""The queue page (#/queue) in a real browser against the real platform: real jobs of the fake
trainer, each asking for more than half of the cluster's free CPUs, so that one runs and the rest
wait. The page lists the waiting jobs in the API's order (the high-priority job before the
low-priority one) with why each waits, the projects' use against their quotas, the cluster's free
capacity and whether preemption is on; a viewer sees only their projects' jobs; a model name with
markup is shown as text; the API's 503 (no controller) is a message, not a crash. The job's page
shows its priority, and the new-job form has a priority select (pre-filled by "run again")."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from tests.console.conftest import DESKTOP, PHONE
from tests.fixtures.teams import make_project, make_user

pytestmark = pytest.mark.timeout(300)

XSS_MODEL = "fake-<img src=x onerror=window.__xss=1>"  # the fake trainer takes any model "fake-*"


def fake_job(project: str, cpus: float, **fields) -> dict:
    """A fake-trainer job (tests/trainers/fake) that runs for minutes unless cancelled."""
    return {"framework": "fake", "task_type": "image_classification", "model_name": "fake-1",
            "dataset_id": "ds-test", "epochs": 400, "num_cpus": cpus, "project_id": project,
            "config": {"epoch_seconds": 0.5}, **fields}


@pytest.fixture
def made(platform):
    """Jobs and sweeps to cancel when the test ends, however it ends: the shared cluster is left empty."""
    out: dict[str, list[str]] = {"jobs": [], "sweeps": []}
    yield out
    for sweep_id in out["sweeps"]:
        platform.api("POST", f"/v1/sweeps/{sweep_id}/cancel")
    for job_id in out["jobs"]:
        platform.api("POST", f"/v1/jobs/{job_id}/cancel")
    for job_id in out["jobs"]:
        platform.wait_final(job_id, timeout=60)


def queue(p) -> dict:
    r = p.api("GET", "/v1/queue")
    assert r.status_code == 200, r.text
    return r.json()


def wait_queue(p, until, timeout: float = 90.0, what: str = "") -> dict:
    deadline = time.monotonic() + timeout
    while True:
        q = queue(p)
        if until(q):
            return q
        if time.monotonic() > deadline:
            raise AssertionError(f"the queue never showed {what} within {timeout:g}s: "
                                 f"{[(j['job_id'], j['position'], j['waiting_for']) for j in q['jobs']]}")
        time.sleep(0.3)


def create(p, made, body) -> dict:
    r = p.api("POST", "/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    made["jobs"].append(r.json()["id"])
    return r.json()


def test_the_queue_page_lists_the_waiting_jobs_in_order_and_the_projects_use_against_their_quotas(signed_in, made):
    console, page, p = signed_in, signed_in.page, signed_in.platform
    # the cluster as the queue sees it, once no one else's job waits (an earlier test's may still end)
    q = wait_queue(p, lambda q: not q["jobs"] and q["capacity"] is not None, what="no job waiting")
    total, free = q["capacity"]["total"]["cpus"], q["capacity"]["free"]["cpus"]
    ask = round(free * 0.6, 1)  # more than half of what is free: two of these never run side by side
    assert ask > 0 and q["preemption"] is True, q

    # project A: at most 1.5 jobs' CPUs (a second job waits for its quota), never preempted
    limited, other = make_project(p), make_project(p)
    cap = round(ask * 1.5, 1)
    r = p.api("PUT", f"/v1/projects/{limited}/quota",
              json={"max_cpus": cap, "max_running_jobs": 2, "weight": 2, "preemptible": False})
    assert r.status_code == 200, r.text

    blocker = create(p, made, fake_job(limited, ask))  # normal priority: runs
    p.wait_state(blocker["id"], "RUNNING", timeout=120)
    low = create(p, made, fake_job(limited, ask, priority="low", model_name=XSS_MODEL))  # over A's quota
    high = create(p, made, fake_job(other, ask, priority="high"))  # A's job may not be preempted: waits for CPUs
    r = p.api("POST", "/v1/sweeps", json={
        "name": "queued-sweep", "project_id": other, "job": {k: v for k, v in fake_job(other, ask).items() if k != "project_id"},
        "space": {"learning_rate": {"choice": [0.01]}}, "metric": "objective", "mode": "max", "search": "grid",
        "max_concurrent": 1})
    assert r.status_code == 201, r.text
    sweep = r.json()
    made["sweeps"].append(sweep["id"])

    def settled(q: dict) -> bool:  # all three in the queue, QUEUED (a new job is PENDING for one pass)
        ids = [j["job_id"] for j in q["jobs"]]
        return ({low["id"], high["id"]} <= set(ids) and any(j["sweep_id"] == sweep["id"] for j in q["jobs"])
                and all(j["state"] == "QUEUED" for j in q["jobs"]))
    q = wait_queue(p, settled, what="the three jobs waiting")
    api_order = [j["job_id"] for j in q["jobs"]]
    by_id = {j["job_id"]: j for j in q["jobs"]}
    trial = next(j for j in q["jobs"] if j["sweep_id"] == sweep["id"])
    made["jobs"].append(trial["job_id"])
    assert api_order.index(high["id"]) < api_order.index(trial["job_id"]) < api_order.index(low["id"]), q["jobs"]
    assert by_id[high["id"]]["priority_name"] == "high" and by_id[low["id"]]["priority_name"] == "low"
    assert by_id[low["id"]]["waiting_for"] == f"project {limited}: {ask:g}/{cap:g} CPUs in use"
    assert by_id[high["id"]]["waiting_for"] == f"waiting for {ask:g} CPUs to be free"

    # ---- the page, from the nav
    page.click('#nav a[data-nav="queue"]')
    page.wait_for_url(re.compile(r"#/queue$"))
    expect(page.locator("#page-queue h1")).to_have_text("Queue")
    expect(page.locator('#nav a[data-nav="queue"]')).to_have_class(re.compile(r"\bactive\b"))
    rows = page.locator("#queue-body tr")
    expect(rows).to_have_count(len(api_order))
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.id)") == api_order  # the API's order
    for job_id in (high["id"], trial["job_id"], low["id"]):
        row = page.locator(f'#queue-body tr[data-id="{job_id}"]')
        entry = by_id[job_id]
        expect(row.locator(".c-pos")).to_have_text(str(entry["position"]))
        expect(row.locator(".c-id a")).to_have_text(job_id)
        expect(row.locator(".c-id a")).to_have_attribute("href", f"#/jobs/{job_id}")
        expect(row.locator(".c-project")).to_have_text(entry["project_id"])
        expect(row.locator(".c-priority")).to_have_text(entry["priority_name"])
        expect(row.locator(".c-state .state")).to_have_text(entry["state"])
        expect(row.locator(".c-reason")).to_have_text(entry["waiting_for"])
        expect(row.locator(".c-asks")).to_have_text(f"{ask:g} CPUs")
    high_row, low_row = page.locator(f'#queue-body tr[data-id="{high["id"]}"]'), page.locator(f'#queue-body tr[data-id="{low["id"]}"]')
    expect(high_row.locator(".c-priority .prio")).to_have_class(re.compile(r"\bprio-high\b"))
    expect(page.locator(f'#queue-body tr[data-id="{trial["job_id"]}"] .c-sweep a')).to_have_attribute("href", f"#/sweeps/{sweep['id']}")
    expect(high_row.locator(".c-sweep a")).to_have_count(0)
    # the model name with markup: text, nothing injected
    expect(low_row.locator(".c-model")).to_have_text(f"fake · {XSS_MODEL}")
    assert page.evaluate("window.__xss") is None and page.locator("#page-queue img").count() == 0

    # the projects: A's use against its quota, B's without one
    a = page.locator(f'#queue-projects-body tr[data-project="{limited}"]')
    expect(a.locator(".c-cpus .meter-text")).to_have_text(f"{ask:g} / {cap:g} CPUs")
    expect(a.locator(".c-cpus .meter")).to_have_attribute("aria-valuemax", f"{cap:g}")
    expect(a.locator(".c-jobs .meter-text")).to_have_text("1 / 2 jobs")
    expect(a.locator(".c-gpus")).to_have_text("0 GPUs no quota")
    expect(a.locator(".c-weight")).to_have_text("2")
    expect(a.locator(".c-waiting")).to_have_text("1")
    expect(a.locator(".c-preemptible")).to_have_text("never preempted")
    share = next(x["share"] for x in q["projects"] if x["project_id"] == limited)
    expect(a.locator(".c-share")).to_have_text(re.compile(r"^\d+\.\d%$"))
    assert share > 0
    b = page.locator(f'#queue-projects-body tr[data-project="{other}"]')
    expect(b.locator(".c-cpus")).to_have_text("0 CPUs no quota")
    expect(b.locator(".c-jobs")).to_have_text("0 jobs no quota")
    expect(b.locator(".c-waiting")).to_have_text("2")
    expect(b.locator(".c-preemptible")).to_have_text("yes")
    # the cluster: free of total, and preemption on
    expect(page.locator("#capacity-cpus strong")).to_have_text(re.compile(rf"^[0-9.]+ of {total:g} CPUs free"))
    expect(page.locator("#queue-preemption strong")).to_have_text("on")
    expect(page.locator("#queue-decided")).to_contain_text("Decided at")
    # live: the page is read again (the controller decides again every pass)
    first = page.locator("#page-queue").get_attribute("data-updated")
    expect(page.locator("#page-queue")).not_to_have_attribute("data-updated", first or "", timeout=15_000)
    console.shot("queue")
    page.set_viewport_size(PHONE)  # a phone: no sideways scroll, no word broken
    for wrap in page.locator("#page-queue .table-wrap").all():
        assert wrap.evaluate("el => el.scrollWidth <= el.clientWidth")
    assert console.broken_words("#page-queue") == []
    page.set_viewport_size(DESKTOP)

    # ---- a job's page: its priority; the form's priority select ("run again" keeps it)
    low_row.locator(".c-id a").click()
    page.wait_for_url(re.compile(rf"#/jobs/{low['id']}$"))
    expect(page.locator("#job-priority")).to_have_text("low")
    expect(page.locator("#job-preemptions")).to_have_count(0)  # none: not shown
    expect(page.locator("#job-waiting")).to_have_text(f"Waiting: project {limited}: {ask:g}/{cap:g} CPUs in use")
    assert page.evaluate("window.__xss") is None
    console.shot("queue-job-priority")
    console.go(f"#/jobs/{high['id']}")
    expect(page.locator("#job-priority")).to_have_text("high")
    page.click("#run-again")
    page.wait_for_url(re.compile(rf"#/submit\?from={high['id']}$"))
    expect(page.locator("#f-priority")).to_have_value("80")
    assert page.locator("#f-priority option").evaluate_all("os => os.map(o => o.textContent)") == ["low", "normal", "high"]
    page.locator("#f-priority").scroll_into_view_if_needed()
    console.shot("queue-submit-priority")
    page.select_option("#f-priority", label="low")
    page.click("#submit-job")
    page.wait_for_url(re.compile(r"#/jobs/[0-9a-f]+$"))
    again = page.url.rsplit("/", 1)[1]
    made["jobs"].append(again)
    assert p.job(again)["priority"] == 20
    expect(page.locator("#job-priority")).to_have_text("low")
    console.go("#/submit")
    expect(page.locator("#f-priority")).to_have_value("50")  # a new job: normal

    # ---- a viewer of B only: B's jobs, at their places in the whole queue; A neither listed nor shown
    viewer = make_user(p, roles={other: "viewer"})
    page.click("#signout")
    console.sign_in(viewer.token)
    expect(page.locator("#whoami-user")).to_have_text(viewer.user_id)
    console.go("#/queue")
    expect(page.locator(f'#queue-body tr[data-id="{high["id"]}"]')).to_be_visible()
    expect(page.locator(f'#queue-body tr[data-project="{limited}"]')).to_have_count(0)
    expect(page.locator(f'#queue-projects-body tr[data-project="{limited}"]')).to_have_count(0)
    expect(page.locator(f'#queue-projects-body tr[data-project="{other}"]')).to_have_count(1)
    expect(page.locator(f'#queue-body tr[data-id="{high["id"]}"] .c-pos')).to_have_text(str(by_id[high["id"]]["position"]))


def test_the_queue_page_says_so_when_no_controller_answers_and_recovers(signed_in):
    console, page = signed_in, signed_in.page
    console.expected_statuses = {503}
    detail = "the controller is not running: no queue to show"  # the API's own 503 (api/routes/queue.py)
    page.route("**/v1/queue", lambda route: route.fulfill(status=503, json={"detail": detail}))
    console.go("#/queue")
    expect(page.locator("#queue-status")).to_have_text(re.compile(rf"^The queue cannot be shown right now \({detail}\)\."))
    expect(page.locator("#queue-status")).to_have_attribute("role", "alert")
    expect(page.locator("#queue-content")).to_be_hidden()
    console.shot("queue-503")
    page.unroute("**/v1/queue")  # the controller back: the page shows the queue at its next try
    expect(page.locator("#queue-content")).to_be_visible(timeout=20_000)
    expect(page.locator("#queue-status")).to_be_hidden()
