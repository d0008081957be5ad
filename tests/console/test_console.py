"""The web console end to end (issue 16): a user in a real browser against the real platform."""

from __future__ import annotations

import io
import re

import httpx
import pytest
from playwright.sync_api import expect
from sdk.contract import artifacts_prefix


pytestmark = pytest.mark.timeout(240)


def png(width: int, height: int, color=(40, 120, 200)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


def chart_points(page, group: str) -> int:
    el = page.locator(f'#charts .chart[data-group="{group}"]')
    return int(el.get_attribute("data-points") or 0) if el.count() else 0


# ------------------------------------------------------------------ serving, sign-in, CSP
def test_console_is_served_with_a_strict_policy_and_nothing_from_elsewhere(platform):
    r = httpx.get(f"{platform.base_url}/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    assert "frame-ancestors 'none'" in csp and r.headers["x-content-type-options"] == "nosniff"
    # every script and stylesheet comes from this origin; no inline script
    assert not re.search(r"<script(?![^>]*\bsrc=\"/console/)", r.text)
    assert "http://" not in r.text and "https://" not in r.text
    for asset in re.findall(r'(?:src|href)="(/console/[^"]+)"', r.text):
        a = httpx.get(f"{platform.base_url}{asset}")
        assert a.status_code == 200 and "content-security-policy" in a.headers, asset
    js = httpx.get(f"{platform.base_url}/console/app.js")
    assert js.headers["content-type"].startswith("text/javascript")
    for bad in ["../server.py", "..%2Fserver.py", "vendor/README", "nope.js", "%2e%2e/__init__.py"]:
        assert httpx.get(f"{platform.base_url}/console/{bad}").status_code == 404, bad
    assert "/console" not in httpx.get(f"{platform.base_url}/openapi.json").text  # not part of the API


def test_sign_in_keeps_the_token_in_the_tab_and_refuses_a_bad_one(console):
    page = console.page
    console.expected_statuses = {401}
    console.sign_in("not-a-token")
    expect(page.locator("#signin .error")).to_have_text("That token was refused.")
    console.sign_in()
    expect(page.locator("#page-jobs h1")).to_have_text("Jobs")
    assert console.platform.api_token not in page.url
    assert page.evaluate("sessionStorage.getItem('vtp.token')") == console.platform.api_token
    assert page.evaluate("localStorage.length") == 0 and "vtp" not in page.evaluate("document.cookie")
    page.reload()
    expect(page.locator("#page-jobs")).to_be_visible()  # still signed in in this tab
    page.click("#signout")
    expect(page.locator("#signin")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('vtp.token')") is None


# ------------------------------------------------------------------ submit, watch live, cancel
def test_submit_from_the_form_then_watch_it_train_live_and_cancel_it(signed_in):
    console, page, p = signed_in, signed_in.page, signed_in.platform
    console.expected_statuses = {422}
    console.go("#/submit")
    page.select_option("#f-framework", "manual")
    page.select_option("#f-task_type", "object_detection")
    page.fill("#f-model_name", "any")
    page.fill("#f-dataset_id", "ds-console")
    page.fill("#f-project_id", "console-live")
    page.fill("#f-epochs", "0")  # the API's 422s are shown at the fields they name
    page.fill("#f-register_as", "../bad")
    page.click("#submit-job")
    expect(page.locator('.field[data-field="epochs"] .field-error')).to_contain_text("greater than or equal to 1")
    expect(page.locator('.field[data-field="register_as"] .field-error')).to_contain_text("should match pattern")
    page.fill("#f-register_as", "")
    page.fill("#f-epochs", "5")
    page.fill("#f-config", '{"lr0": 0.02}')
    page.click("#submit-job")
    page.wait_for_url(re.compile(r"#/jobs/[0-9a-f]{16}$"))
    job_id = page.url.rsplit("/", 1)[1]
    job = p.job(job_id)
    assert (job["project_id"], job["epochs"], job["config"]) == ("console-live", 5, {"lr0": 0.02})

    p.wait_state(job_id, "QUEUED")
    assert p.callback(job_id, "event", {"event_type": "started", "message": "warming up"}).status_code == 200
    expect(page.locator("#summary .state")).to_have_text("RUNNING")
    expect(page.locator("#events")).to_contain_text("warming up")
    expect(page.locator("#logs")).to_contain_text("manual trainer waiting")  # the trainer's own output
    for epoch in (1, 2, 3):  # the chart gains a point with each heartbeat
        body = {"event_id": f"hb-console-{epoch}", "epoch": epoch, "total_epochs": 5,
                "metrics": {"train_loss": 1.0 / epoch, "mAP50": epoch / 10, "lr": 0.01}}
        assert p.callback(job_id, "heartbeat", body).status_code == 200
        page.wait_for_function("n => Number(document.querySelector('#charts .chart[data-group=\"Losses\"]')"
                               "?.dataset.points) === n", arg=epoch)
    assert chart_points(page, "Quality") == 3 and chart_points(page, "Learning rate") == 3
    expect(page.locator("#progress-text")).to_contain_text("epoch 3 of 5")
    console.shot("job-running")

    page.click("#cancel")
    page.click("#cancel")  # the second click confirms
    expect(page.locator("#summary .state")).to_have_text("CANCELLED", timeout=30_000)
    assert p.job(job_id)["state"] == "CANCELLED"
    expect(page.locator("#cancel")).to_be_disabled()
    page.click("#run-again")  # the form, filled from this job
    expect(page.locator("#f-project_id")).to_have_value("console-live")
    expect(page.locator("#f-epochs")).to_have_value("5")


# ------------------------------------------------------------------ artifacts, predictions
def test_a_finished_job_shows_its_plots_and_draws_predictions_on_an_image(signed_in, deployment):
    console, page, p = signed_in, signed_in.page, signed_in.platform
    job_id = p.create_job(framework="console", model_name="console-det", project_id="console-predict", epochs=3,
                          config={"class_name": "square", "say": ["console trainer says hello"]})["id"]
    assert p.wait_final(job_id, timeout=120)["state"] == "SUCCEEDED"
    # a plot as a trainer stores it (Ultralytics' results.png, confusion matrix...)
    deployment.s3.client().put_object(Bucket=deployment.s3.bucket, Key=f"{artifacts_prefix(job_id)}results.png",
                                      Body=png(64, 48, (200, 30, 30)), ContentType="image/png")
    console.go(f"#/jobs/{job_id}")
    expect(page.locator("#summary .state")).to_have_text("SUCCEEDED")
    plot = page.locator('#artifacts figure.plot img[alt="results.png"]')
    expect(plot).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth === 64", arg=plot.element_handle())
    expect(page.locator("#logs")).to_contain_text("console trainer says hello")
    assert chart_points(page, "Losses") == 3

    page.set_input_files("#predict-file", files=[{"name": "probe.png", "mimeType": "image/png",
                                                  "buffer": png(200, 100)}])
    box = page.locator("#predict-result svg rect.box")
    expect(box).to_have_count(1, timeout=120_000)  # the first call starts the predictor
    assert [float(box.get_attribute(a)) for a in ("x", "y", "width", "height")] == [50, 25, 100, 50]
    expect(page.locator("#predict-result .detections")).to_contain_text("square")
    console.shot("job-predicted")


# ------------------------------------------------------------------ compare
def test_compare_two_runs_overlays_their_curves_and_highlights_what_differs(signed_in):
    console, page, p = signed_in, signed_in.page, signed_in.platform
    ids = [p.create_job(framework="console", model_name="console-cmp", project_id="console-compare", epochs=4,
                        learning_rate=lr)["id"] for lr in (0.01, 0.05)]
    for job_id in ids:
        assert p.wait_final(job_id, timeout=120)["state"] == "SUCCEEDED"
    console.go("#/jobs?project_id=console-compare")
    for job_id in ids:
        page.check(f'tr[data-id="{job_id}"] input[type=checkbox]')
    page.click("#compare-selected")
    chart = page.locator('#compare-charts .chart[data-group="train_loss"]')
    expect(chart).to_have_attribute("data-points", "8")  # 4 epochs of each run
    assert len(chart.get_attribute("data-series").split("|")) == 2
    expect(page.locator('#compare-table tr[data-key="learning_rate"]')).to_have_class("diff")
    expect(page.locator('#compare-table tr[data-key="epochs"]')).not_to_have_class("diff")
    expect(page.locator('#compare-table tr[data-key="metric.mAP50"]')).to_be_visible()
    console.shot("compare")


# ------------------------------------------------------------------ escaping
XSS = ['<script>window.__xss = 1</script>', '<img src=x onerror="window.__xss = 1">']


@pytest.mark.parametrize("payload", XSS)
def test_what_users_and_trainers_send_renders_as_text(signed_in, payload):
    console, page, p = signed_in, signed_in.page, signed_in.platform
    job_id = p.create_job(framework="console", model_name=f"console-{payload}", project_id="console-xss",
                          epochs=2, config={payload: payload, "say": [f"log {payload}"], "event_message": f"event {payload}",
                                            "metric": f"metric {payload}", "class_name": f"class {payload}",
                                            "mlflow_run_id": f"run {payload}"})["id"]
    assert p.wait_final(job_id, timeout=120)["state"] == "SUCCEEDED"
    console.go(f"#/jobs/{job_id}")
    expect(page.locator("#logs")).to_contain_text(f"log {payload}")
    expect(page.locator("#events")).to_contain_text(f"event {payload}")
    expect(page.locator(".job-header")).to_contain_text(f"console-{payload}")
    # a project's name is no longer free text (projects are records with names of letters, digits,
    # . _ -); a project's description with a payload: tests/console/test_console_teams.py
    expect(page.locator("#config")).to_contain_text(payload)
    expect(page.locator("#mlflow")).to_contain_text(f"run {payload}")  # no MLflow UI here: the id as text
    expect(page.locator("#charts")).to_contain_text(f"metric {payload}")  # a chart legend
    page.set_input_files("#predict-file", files=[{"name": "x.png", "mimeType": "image/png", "buffer": png(40, 40)}])
    expect(page.locator("#predict-result .detections")).to_contain_text(f"class {payload}", timeout=120_000)
    console.go("#/jobs")
    expect(page.locator(f'tr[data-id="{job_id}"]')).to_contain_text(f"console-{payload}")
    assert page.evaluate("window.__xss") is None
    assert page.locator("img[src='x'], script:not([src])").count() == 0
    console.shot(f"escaped-{XSS.index(payload)}")
