"""The console's lists (issue 16): jobs (filters, id search, pages, live rows) and datasets
(upload from the browser with a progress bar, the validation report, sample images with their
boxes drawn)."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import expect

from ray_app.datasets import make_detection, zip_dataset
from tests.console.conftest import DESKTOP, PHONE
from tests.spine.test_hostile_input import running_job

pytestmark = pytest.mark.timeout(240)
XSS_CLASS = '<img src=x onerror="window.__xss = 1">'


def test_the_jobs_list_filters_searches_pages_and_stays_live(signed_in):
    console, page, p = signed_in, signed_in.page, signed_in.platform
    project = f"console-list-{uuid.uuid4().hex[:6]}"
    queued = [p.create_job(project_id=project, num_gpus=64)["id"] for _ in range(3)]  # never placed: no 64 GPUs
    console.go(f"#/jobs?project_id={project}&limit=2")
    rows = page.locator("#jobs-body tr")
    expect(rows).to_have_count(2)
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.id)") == queued[::-1][:2]  # newest first
    page.click("#next-page")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-id", queued[0])

    # id search, as typed in the box
    console.go("#/jobs")
    page.fill('#job-filters input[name="id_prefix"]', queued[1][:10])
    page.click('#job-filters button[type="submit"]')
    page.wait_for_url(re.compile(r"id_prefix="))
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-id", queued[1])

    # live: a new job appears on top, a heartbeat moves a row's progress, no reload
    console.go(f"#/jobs?project_id={project}")
    expect(rows).to_have_count(3)
    page.wait_for_timeout(500)
    fresh = running_job(p)  # project "hostile": not this filter, so not shown
    live = p.create_job(project_id=project)["id"]
    expect(rows.first).to_have_attribute("data-id", live)
    p.wait_state(live, "QUEUED")
    assert p.callback(live, "event", {"event_type": "started"}).status_code == 200
    expect(page.locator(f'tr[data-id="{live}"] .state')).to_have_text("RUNNING")
    assert p.callback(live, "heartbeat", {"event_id": "hb-list-1", "epoch": 2, "total_epochs": 5}).status_code == 200
    expect(page.locator(f'tr[data-id="{live}"] .progress')).to_have_attribute("aria-valuenow", "40")
    expect(page.locator(f'tr[data-id="{live}"] .epoch')).to_have_text("2/5")
    assert page.locator(f'tr[data-id="{fresh}"]').count() == 0
    page.select_option('#job-filters select[name="state"]', "RUNNING")
    page.click('#job-filters button[type="submit"]')
    expect(rows).to_have_count(1)
    console.shot("jobs-list")
    for job_id in [*queued, live, fresh]:
        p.api("POST", f"/v1/jobs/{job_id}/cancel")


def test_a_dataset_uploads_from_the_browser_and_shows_its_report(signed_in, tmp_path):
    console, page = signed_in, signed_in.page
    name = f"console-ds-{uuid.uuid4().hex[:6]}"
    # a class name a user chose badly: shown as text in the report and on the samples
    classes = ("circle", "square", XSS_CLASS)
    archive = zip_dataset(make_detection(tmp_path / "det", n_images=6, size=64, seed=3, classes=classes),
                          tmp_path / "det.zip")
    console.go("#/datasets")
    page.fill("#upload-id", name)
    page.set_input_files("#upload-file", str(archive))
    page.click('#upload-form button[type="submit"]')
    page.wait_for_url(re.compile(rf"#/datasets/{name}$"), timeout=60_000)
    expect(page.locator(".vstate-valid")).to_be_visible(timeout=60_000)
    expect(page.locator(".report")).to_contain_text("6 images")
    expect(page.locator(".report")).to_contain_text("No problems found.")
    # the version's samples: every image (6 of them, boxes drawn over each) loaded from its presigned URL
    samples = page.locator(".samples figure.sample")
    expect(samples).to_have_count(6, timeout=30_000)
    page.wait_for_function("""() => [...document.querySelectorAll('.samples img')].every(
        (img) => img.complete && img.naturalWidth > 0)""")
    assert page.locator(".samples img").evaluate_all("imgs => imgs.map((i) => i.naturalWidth)") == [64] * 6
    expect(page.locator(".samples svg.overlay rect.box").first).to_be_visible()
    assert page.locator(".samples svg.overlay").first.get_attribute("viewBox") == "0 0 64 64"
    labels = page.locator(".samples text.box-label").all_text_contents()
    assert labels and set(labels) <= set(classes)  # ground truth: no confidence
    assert XSS_CLASS in labels and XSS_CLASS in page.locator(".report .classes").inner_text()
    assert page.evaluate("window.__xss") is None and page.locator("img[src='x']").count() == 0
    console.shot("dataset")
    page.set_viewport_size(PHONE)  # the version's hash and address wrap: no sideways scroll on a phone
    assert page.evaluate("() => document.scrollingElement.scrollWidth <= innerWidth")
    page.set_viewport_size(DESKTOP)
    console.go("#/datasets")
    expect(page.locator("#datasets-body")).to_contain_text(name)
    page.set_viewport_size(PHONE)  # the list keeps what a phone has room for: no sideways scroll, no word broken
    assert page.locator("#page-datasets .table-wrap").evaluate("el => el.scrollWidth <= el.clientWidth")
    assert console.broken_words("#page-datasets") == []
    page.set_viewport_size(DESKTOP)
    console.go("#/submit")  # the form offers it
    expect(page.locator(f'#dataset-options option[value="{name}"]')).to_have_count(1)
