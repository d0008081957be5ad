"""Hyperparameter sweeps in the console, in a real browser against the real platform: the sweeps
list (live while a sweep is), a sweep's page (header, search space, cancel offered by role), a new
sweep from a job's page (pre-filled from the job, the API's 422 shown next to the form), names and
values from users shown as text; and a real sweep of the fake trainer: the trials table sorted by
the metric, one chart of every trial's metric, a scatter per hyperparameter, the best trial linked."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.fixtures.teams import as_user, make_project, make_user, suffix

pytestmark = pytest.mark.timeout(240)

REPO = Path(__file__).resolve().parents[2]


XSS_NAME = "<img src=x onerror=window.__xss=1>"
XSS_VALUE = "<script>window.__xss=2</script>"


def sweep_body(name: str, project: str, **fields) -> dict:
    """A sweep of manual jobs (they wait for callbacks: a trial, if a driver starts one, runs until cancelled)."""
    return {"name": name, "project_id": project,
            "job": {"framework": "manual", "task_type": "object_detection", "model_name": "any",
                    "dataset_id": "ds-test", "epochs": 3},
            "space": {"learning_rate": {"loguniform": [0.001, 0.1]}, "config.x": {"choice": [1, 2]}},
            "metric": "mAP50", "mode": "max", "num_trials": 4, "max_concurrent": 1, "search": "random",
            "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 3}, **fields}


@pytest.fixture
def sweeps_to_cancel(platform):
    """Sweeps (and jobs) to cancel when the test ends, however it ends."""
    made: dict[str, list[str]] = {"sweeps": [], "jobs": []}
    yield made
    for sweep_id in made["sweeps"]:
        platform.api("POST", f"/v1/sweeps/{sweep_id}/cancel")
    for job_id in made["jobs"]:
        platform.api("POST", f"/v1/jobs/{job_id}/cancel")


def create_sweep(p, made, body, member=None) -> dict:
    r = as_user(p, member, "POST", "/v1/sweeps", json=body) if member else p.api("POST", "/v1/sweeps", json=body)
    assert r.status_code == 201, r.text
    made["sweeps"].append(r.json()["id"])
    return r.json()


def sweep_state(p, sweep_id: str) -> str:
    r = p.api("GET", f"/v1/sweeps/{sweep_id}")
    assert r.status_code == 200, r.text
    return r.json()["state"]


# ------------------------------------------------------------------ a: the list and a sweep's page
def test_the_sweeps_list_stays_live_and_a_sweeps_page_shows_its_setup_and_cancels(signed_in, sweeps_to_cancel):
    console, page, p = signed_in, signed_in.page, signed_in.platform
    project = make_project(p)
    first = create_sweep(p, sweeps_to_cancel, sweep_body("lr-and-x", project))
    second = create_sweep(p, sweeps_to_cancel, sweep_body("grid-of-lr", project, search="grid", scheduler=None,
                                                          metric="val_loss", mode="min",
                                                          space={"learning_rate": {"choice": [0.01, 0.1]}}))

    page.click('#nav a[data-nav="sweeps"]')
    expect(page.locator("#page-sweeps h1")).to_have_text("Sweeps")
    page.select_option("#project-picker", project)  # the list follows the header's picker
    page.wait_for_url(re.compile(rf"#/sweeps\?project_id={project}$"))
    rows = page.locator("#sweeps-body tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_have_attribute("data-id", second["id"])  # newest first
    one = page.locator(f'#sweeps-body tr[data-id="{first["id"]}"]')
    expect(one.locator(".c-name")).to_have_text("lr-and-x")
    expect(one.locator(".c-state .state")).to_have_text(re.compile("PENDING|RUNNING"))
    expect(one.locator(".c-project")).to_have_text(project)
    expect(one.locator(".c-metric")).to_have_text("mAP50 max")
    expect(one.locator(".trials-total")).to_have_text(re.compile(r"^\d+/4$"))
    expect(page.locator(f'#sweeps-body tr[data-id="{second["id"]}"] .c-metric')).to_have_text("val_loss min")
    expect(page.locator(f'#sweeps-body tr[data-id="{second["id"]}"] .trials-total')).to_have_text(re.compile(r"^\d+/2$"))
    expect(page.locator("#page-sweeps")).to_have_attribute("data-live", "true")
    console.shot("sweeps-list")

    # live: a sweep cancelled elsewhere changes in the list without a reload
    assert p.api("POST", f"/v1/sweeps/{second['id']}/cancel").status_code == 200
    expect(page.locator(f'#sweeps-body tr[data-id="{second["id"]}"] .c-state .state')).to_have_text("CANCELLED", timeout=30_000)

    # the sweep's page: its setup, then cancelled from the page
    page.click(f'#sweeps-body tr[data-id="{first["id"]}"] .c-name a')
    page.wait_for_url(re.compile(rf"#/sweeps/{first['id']}$"))
    expect(page.locator("#sweep-name")).to_have_text("lr-and-x")
    expect(page.locator("#sweep-header .state")).to_have_text(re.compile("PENDING|RUNNING"))
    expect(page.locator("#sweep-objective")).to_have_text("max mAP50")
    expect(page.locator("#sweep-search")).to_have_text("random")
    expect(page.locator("#sweep-scheduler")).to_have_text("asha (grace period 1, reduction factor 3)")
    expect(page.locator("#sweep-counts")).to_contain_text("of 4")
    expect(page.locator("#sweep-created-by")).to_have_text("created by admin")
    expect(page.locator('#sweep-space tr[data-path="learning_rate"]')).to_contain_text("loguniform")
    expect(page.locator('#sweep-space tr[data-path="learning_rate"] .c-values')).to_have_text("0.001 … 0.1")
    expect(page.locator('#sweep-space tr[data-path="config.x"] .c-values')).to_have_text("1, 2")
    assert json.loads(page.locator("#sweep-job").inner_text())["model_name"] == "any"
    console.shot("sweep-pending")

    page.click("#sweep-cancel")
    expect(page.locator("#sweep-cancel")).to_have_text("Confirm cancel")
    page.click("#sweep-cancel")  # the second click confirms
    expect(page.locator("#sweep-header .state")).to_have_text("CANCELLED", timeout=30_000)
    expect(page.locator("#sweep-cancel")).to_be_disabled()
    expect(page.locator("#sweep-cancelled-by")).to_have_text("cancelled by admin")
    assert sweep_state(p, first["id"]) == "CANCELLED"
    assert page.locator("#page-sweeps").get_attribute("data-state") == "CANCELLED"  # no longer polled

    # the scatter's x axes: log for a loguniform domain, a column per value for a choice
    axes = page.evaluate("""async () => {
      const { xAxis } = await import("/console/sweep.js");
      const log = xAxis({ loguniform: [0.0001, 0.1] }, [0.001, 0.01]);
      const cat = xAxis({ choice: [1, "b"] }, [1]);
      const lin = xAxis({ uniform: [0, 1] }, [0.5]);
      return { log: [log.scale, log.ticks.map((t) => t[1]), log.pos(0.01) > log.pos(0.001), log.pos(0.01) - log.pos(0.001) - (log.pos(0.1) - log.pos(0.01))],
               cat: [cat.scale, cat.ticks.map((t) => t[1]), cat.pos("b") > cat.pos(1)], lin: lin.scale };
    }""")
    assert axes["log"][:3] == ["log", ["0.0001", "0.001", "0.01", "0.1"], True]
    assert abs(axes["log"][3]) < 1e-9  # a decade is as wide as the next
    assert axes["cat"] == ["category", ["1", "b"], True] and axes["lin"] == "linear"


def test_cancel_is_offered_to_the_sweeps_creator_and_project_admins_only(console, platform, sweeps_to_cancel):
    p, page = platform, console.page
    project = make_project(p)
    viewer = make_user(p, roles={project: "viewer"})
    member = make_user(p, roles={project: "member"})
    admins = create_sweep(p, sweeps_to_cancel, sweep_body(f"admins-{suffix()}", project))
    own = create_sweep(p, sweeps_to_cancel, sweep_body(f"own-{suffix()}", project), member=member)

    for who, offered in ((viewer, set()), (member, {own["id"]})):
        console.sign_in(who.token)
        expect(page.locator("#whoami-user")).to_have_text(who.user_id)
        for sweep in (admins, own):
            console.go(f"#/sweeps/{sweep['id']}")
            expect(page.locator("#sweep-name")).to_have_text(sweep["name"])
            expect(page.locator("#sweep-cancel")).to_have_count(1 if sweep["id"] in offered else 0)
        page.click("#signout")
    console.sign_in()  # the bootstrap admin: a platform admin cancels any
    expect(page.locator("#page-jobs")).to_be_visible()
    console.go(f"#/sweeps/{own['id']}")
    expect(page.locator("#sweep-cancel")).to_be_enabled()


# ------------------------------------------------------------------ b: a new sweep from a job's page
def test_a_new_sweep_from_a_jobs_page_is_prefilled_and_shows_the_apis_422(signed_in, sweeps_to_cancel):
    console, page, p = signed_in, signed_in.page, signed_in.platform
    console.expected_statuses = {422}
    project = f"console-sweep-{suffix()}"
    job = p.create_job(project_id=project, learning_rate=0.02, epochs=5, config={"mosaic": 0.5})
    sweeps_to_cancel["jobs"].append(job["id"])
    p.wait_state(job["id"], "QUEUED")
    assert p.callback(job["id"], "event", {"event_type": "started"}).status_code == 200
    hb = {"event_id": "hb-sweep-1", "epoch": 1, "total_epochs": 5, "metrics": {"train_loss": 0.9, "mAP50": 0.2}}
    assert p.callback(job["id"], "heartbeat", hb).status_code == 200
    p.wait_state(job["id"], "RUNNING")

    console.go(f"#/jobs/{job['id']}")
    page.click("#new-sweep")
    page.wait_for_url(re.compile(rf"#/sweeps/new\?from={job['id']}$"))
    expect(page.locator("#s-job")).to_have_value(re.compile(r'"model_name": "any"'))
    base = json.loads(page.locator("#s-job").input_value())
    assert base == {k: job[k] for k in base} and base["config"] == {"mosaic": 0.5} and "project_id" not in base
    assert json.loads(page.locator("#s-space").input_value()) == {"learning_rate": {"loguniform": [0.002, 0.2]}}
    expect(page.locator("#s-metric")).to_have_value("mAP50")  # a quality metric first, not the loss
    expect(page.locator("#s-mode")).to_have_value("max")
    expect(page.locator("#s-project_id")).to_have_value(project)
    expect(page.locator("#s-name")).to_have_value("any-sweep")
    expect(page.locator("#s-scheduler")).to_have_value("asha")
    console.shot("sweep-form")

    # the API's 422, next to the form and at the field it names
    page.fill("#s-space", '{"learning_rate": {"loguniform": [0, 0.1]}}')
    page.click("#submit-sweep")
    expect(page.locator("#sweep-form-error")).to_contain_text("space.learning_rate")
    expect(page.locator('.field[data-field="space"] .field-error')).to_contain_text("learning_rate")
    page.fill("#s-space", '{"learning_rate": {"choice": [0.01, 0.1]}}')
    page.fill("#s-grace_period", "5")  # not shorter than the trials' 5 epochs
    page.click("#submit-sweep")
    expect(page.locator('.field[data-field="grace_period"] .field-error')).to_contain_text("grace period")
    page.fill("#s-space", "{not json")  # refused before it is sent
    page.click("#submit-sweep")
    expect(page.locator('.field[data-field="space"] .field-error')).to_contain_text("not valid JSON")

    page.fill("#s-space", '{"learning_rate": {"choice": [0.01, 0.1]}}')
    page.select_option("#s-search", "grid")
    page.select_option("#s-scheduler", "")
    page.fill("#s-max_concurrent", "1")
    page.click("#submit-sweep")
    page.wait_for_url(re.compile(r"#/sweeps/[0-9a-f]{16}$"))
    sweep_id = page.url.rsplit("/", 1)[1]
    sweeps_to_cancel["sweeps"].append(sweep_id)
    made = p.api("GET", f"/v1/sweeps/{sweep_id}").json()
    assert (made["project_id"], made["metric"], made["mode"], made["search"], made["scheduler"], made["num_trials"]) == (
        project, "mAP50", "max", "grid", None, 2)
    assert made["job"]["config"] == {"mosaic": 0.5} and made["job"]["model_name"] == "any"
    expect(page.locator("#sweep-name")).to_have_text("any-sweep")
    expect(page.locator("#sweep-scheduler")).to_have_text("none (every trial runs its epochs)")


# ------------------------------------------------------------------ c: what users name is text
def test_a_sweeps_name_and_space_values_are_shown_as_text(signed_in, sweeps_to_cancel):
    console, page, p = signed_in, signed_in.page, signed_in.platform
    project = f"console-sweep-xss-{suffix()}"
    body = sweep_body(XSS_NAME, project, search="grid", scheduler=None,
                      space={"config.x": {"choice": [XSS_VALUE, "b"]}, "learning_rate": {"choice": [0.01]}})
    sweep = create_sweep(p, sweeps_to_cancel, body)
    console.go(f"#/sweeps?project_id={project}")
    expect(page.locator(f'#sweeps-body tr[data-id="{sweep["id"]}"] .c-name')).to_have_text(XSS_NAME)
    console.go(f"#/sweeps/{sweep['id']}")
    expect(page.locator("#sweep-name")).to_have_text(XSS_NAME)
    expect(page.locator('#sweep-space tr[data-path="config.x"] .c-values')).to_have_text(f"{XSS_VALUE}, b")
    expect(page.locator("#sweep-job")).to_be_visible()
    page.wait_for_timeout(300)
    assert page.evaluate("window.__xss") is None
    assert page.locator("img[src='x']").count() == 0 and page.locator("main script").count() == 0
    console.shot("sweep-escaped")


# ------------------------------------------------------------------ d: a real sweep's trials
def test_a_finished_sweeps_trials_table_chart_and_scatter(signed_in, sweeps_to_cancel):
    console, page, p = signed_in, signed_in.page, signed_in.platform
    project = f"console-sweep-run-{suffix()}"
    body = {"name": "fake-lr-grid", "project_id": project,
            "job": {"framework": "fake", "task_type": "image_classification", "model_name": "fake-1",
                    "dataset_id": "ds-test", "epochs": 4, "config": {"epoch_seconds": 0.2}},
            "space": {"learning_rate": {"choice": [0.01, 0.1]}}, "metric": "objective", "mode": "max",
            "num_trials": 2, "max_concurrent": 2, "search": "grid", "scheduler": None}
    sweep = create_sweep(p, sweeps_to_cancel, body)
    console.go(f"#/sweeps/{sweep['id']}")  # watched while it runs: the page polls
    deadline = time.monotonic() + 180
    while (state := sweep_state(p, sweep["id"])) not in ("SUCCEEDED", "FAILED", "CANCELLED"):
        assert time.monotonic() < deadline, f"the sweep is still {state} after 180 s"
        time.sleep(1)
    assert state == "SUCCEEDED", p.api("GET", f"/v1/sweeps/{sweep['id']}").text
    done = p.api("GET", f"/v1/sweeps/{sweep['id']}").json()
    expect(page.locator("#sweep-header .state")).to_have_text("SUCCEEDED", timeout=30_000)

    rows = page.locator("#trials-body tr")
    expect(rows).to_have_count(2)
    expect(page.locator("#trials-body .trial-status")).to_have_text(["succeeded", "succeeded"])
    expect(page.locator("#sweep-counts")).to_contain_text("2 succeeded")
    # sorted by the metric, best first, then the other way; the fake's objective is best at lr 0.01
    best = done["best"]
    assert best["params"] == {"learning_rate": 0.01}
    expect(page.locator(f'#trials-body tr[data-job="{best["job_id"]}"]')).to_have_class(re.compile(r"\bbest\b"))
    page.click("#sort-metric")
    expect(page.locator("#sort-metric")).to_contain_text("best first")
    metrics = [float(t) for t in page.locator("#trials-body .c-metric").all_inner_texts()]
    assert metrics == sorted(metrics, reverse=True) and metrics[0] == pytest.approx(best["best_metric"], abs=1e-2)
    order = [rows.nth(i).get_attribute("data-job") for i in range(2)]
    assert order[0] == best["job_id"]
    page.click("#sort-metric")
    expect(page.locator("#sort-metric")).to_contain_text("worst first")
    assert [rows.nth(i).get_attribute("data-job") for i in range(2)] == order[::-1]
    # the best trial, linked
    expect(page.locator("#best-link")).to_have_attribute("href", f"#/jobs/{done['best_job_id']}")
    # one chart: every trial's metric by epoch (4 epochs each)
    chart = page.locator('#sweep-chart .chart[data-group="objective"]')
    expect(chart).to_have_attribute("data-points", "8")
    assert set(chart.get_attribute("data-series").split("|")) == {
        f"trial {t['trial']}{' (best)' if t['job_id'] == done['best_job_id'] else ''}" for t in done["trials"]}
    # the hyperparameter against the metric: a choice, one column per value; the best ringed
    scatter = page.locator('#sweep-scatter figure[data-param="learning_rate"]')
    expect(scatter).to_have_attribute("data-scale", "category")
    expect(scatter).to_have_attribute("data-points", "2")
    expect(scatter.locator("circle.pt")).to_have_count(2)
    expect(scatter.locator("circle.pt.best")).to_have_count(1)
    console.shot("sweep-finished")

    # a trial's row links its job, whose page links back to its sweep
    page.click(f'#trials-body tr[data-job="{done["best_job_id"]}"] .c-job a')
    page.wait_for_url(re.compile(rf"#/jobs/{done['best_job_id']}$"))
    expect(page.locator("#job-sweep")).to_have_attribute("href", f"#/sweeps/{sweep['id']}")
