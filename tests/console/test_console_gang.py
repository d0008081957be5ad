"""A job of several workers in the console (issue 27, item 6): submitted from the form (workers,
placement, resources per worker), refused at the workers field by a single-process trainer, and
its page showing the workers, where each rank ran, and its log per rank with a rank filter."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.timeout(240)

# the text of the log lines the page shows (a line filtered out is hidden, not removed)
SHOWN_LINES = "() => [...document.querySelectorAll('#logs .line')].filter((el) => !el.hidden).map((el) => el.textContent)"


def fill_form(page, framework: str, task: str, model: str) -> None:
    page.select_option("#f-framework", framework)
    page.select_option("#f-task_type", task)
    page.fill("#f-model_name", model)
    page.fill("#f-dataset_id", "ds-console")
    page.fill("#f-project_id", "console-gang")


def test_a_two_worker_job_from_the_form_shows_its_ranks_and_their_logs(signed_in):
    console, page, p = signed_in, signed_in.page, signed_in.platform
    console.expected_statuses = {422}
    console.go("#/submit")
    page.wait_for_selector("#f-framework option", state="attached")
    expect(page.locator('label[for="f-num_gpus"]')).to_have_text("GPUs per worker")
    expect(page.locator('label[for="f-num_cpus"]')).to_have_text("CPUs per worker")
    expect(page.locator('label[for="f-memory_mb"]')).to_have_text("Memory per worker (MiB)")
    expect(page.locator("#f-workers")).to_have_value("1")

    # the console trainer declares no `distributed` block: one worker, refused at that field
    fill_form(page, "console", "object_detection", "console-gang")
    page.fill("#f-workers", "2")
    page.click("#submit-job")
    expect(page.locator('.field[data-field="workers"] .field-error')).to_contain_text("at most 1 worker")
    expect(page.locator('.field[data-field="workers"]')).to_have_class(re.compile(r"\binvalid\b"))

    fill_form(page, "fake", "image_classification", "fake-gang")
    page.fill("#f-workers", "2")
    page.select_option("#f-placement_strategy", "SPREAD")  # as many nodes as there are (or both on one)
    page.fill("#f-num_cpus", "0.5")
    page.fill("#f-epochs", "3")
    page.fill("#f-config", '{"epoch_seconds": 0.3}')
    page.click("#submit-job")
    page.wait_for_url(re.compile(r"#/jobs/[0-9a-f]{16}$"))
    job_id = page.url.rsplit("/", 1)[1]
    job = p.wait_final(job_id, timeout=120)
    assert job["state"] == "SUCCEEDED", job
    assert (job["workers"], job["placement_strategy"], job["num_cpus"]) == (2, "SPREAD", 0.5)

    expect(page.locator("#summary .state")).to_have_text("SUCCEEDED", timeout=30_000)
    expect(page.locator("#summary table.kv tr", has_text="workers")).to_contain_text("2 · SPREAD")
    rows = page.locator("#ranks tbody tr")
    expect(rows).to_have_count(2)
    for rank in (0, 1):
        node = next(r["node_id"] for r in job["ranks"] if r["rank"] == rank)
        row = page.locator(f'#ranks tbody tr[data-rank="{rank}"]')
        expect(row.locator(".c-node")).to_have_text(node[:12])
        expect(row.locator(".c-pid")).to_have_text(re.compile(r"^\d+$"))
    ran = job["attempts"][-1]["ranks"]
    assert sorted(r["rank"] for r in ran) == [0, 1]
    nodes = page.locator("#attempts tbody tr").last.locator(".c-nodes")
    for r in ran:
        expect(nodes).to_contain_text(r["node_id"][:12])
    expect(nodes).to_contain_text("rank")  # which of them ran where

    logs = page.locator("#logs")
    expect(logs).to_contain_text("[rank 1] ")
    expect(logs).to_contain_text("fake trainer attempt 1")  # rank 0's own lines, as they were
    ready = logs.locator(".line", has_text="rank 1 ready:")
    expect(ready).to_have_count(1)
    assert ready.text_content().startswith("[rank 1] ")
    both = page.evaluate(SHOWN_LINES)
    assert all(not line.startswith("[rank 0]") for line in both)  # rank 0 is the job's own log
    assert any(not line.startswith("[rank ") for line in both)

    expect(page.locator("#log-rank option")).to_have_text(["all ranks", "rank 0", "rank 1"])
    page.select_option("#log-rank", "1")
    shown = page.evaluate(SHOWN_LINES)
    assert shown and all(line.startswith("[rank 1] ") for line in shown), shown
    assert shown == [line for line in both if line.startswith("[rank 1] ")]  # in their order
    page.select_option("#log-rank", "0")
    shown = page.evaluate(SHOWN_LINES)
    assert shown and not any(line.startswith("[rank ") for line in shown), shown
    page.select_option("#log-rank", "")
    assert page.evaluate(SHOWN_LINES) == both
    page.select_option("#log-rank", "1")
    console.shot("job-gang")
