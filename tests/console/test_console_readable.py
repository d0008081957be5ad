"""What outside testers found in the console's screenshots at 1280×800 and 390×844 (issue 31,
items 10-16), each seen in a real browser against the real platform: the sign-in page without the
navigation, lists that follow their newest line, one colour per run when comparing, axis ticks that
differ, predictions readable on a small image, a phone's tables, and a label on every input."""

from __future__ import annotations

import uuid

import pytest
from playwright.sync_api import expect

from tests.console.conftest import DESKTOP, PHONE
from tests.console.test_console import png

pytestmark = pytest.mark.timeout(240)

AT_END = "el => el.scrollTop + el.clientHeight >= el.scrollHeight - 4"
# two animation frames: whatever a resize or a setData scheduled has been drawn
NEXT_FRAMES = "() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))"

# every text a canvas was last drawn with (uPlot draws its ticks on the canvas, not in the DOM)
DRAWN_TEXT = """(() => {
  const drawn = new WeakMap();
  const P = CanvasRenderingContext2D.prototype;
  const { clearRect, fillText } = P;
  P.clearRect = function (x, y, w, h) {
    if (x <= 0 && y <= 0 && w >= this.canvas.width && h >= this.canvas.height) drawn.set(this.canvas, []);
    return clearRect.apply(this, arguments);
  };
  P.fillText = function (text) {
    if (!drawn.has(this.canvas)) drawn.set(this.canvas, []);
    drawn.get(this.canvas).push(String(text));
    return fillText.apply(this, arguments);
  };
  window.__drawnText = (canvas) => drawn.get(canvas) || [];
})()"""

UNLABELLED = """() => [...document.querySelectorAll("input, select, textarea")]
  .filter((el) => el.type !== "hidden" && !el.labels?.length && !el.getAttribute("aria-label") && !el.getAttribute("aria-labelledby"))
  .map((el) => el.id || el.name || el.outerHTML.slice(0, 80))"""


@pytest.fixture
def running(platform):
    """running(project): a manual job that the test feeds events and heartbeats as its trainer
    would; cancelled when the test ends, however it ends."""
    started: list[str] = []

    def start(project: str) -> str:
        job_id = platform.create_job(project_id=project)["id"]
        started.append(job_id)
        platform.wait_state(job_id, "QUEUED")
        assert platform.callback(job_id, "event", {"event_type": "started", "message": "warming up"}).status_code == 200
        return job_id

    yield start
    for job_id in started:
        platform.api("POST", f"/v1/jobs/{job_id}/cancel")


# ------------------------------------------------------------------ 10: signed out, no navigation
def test_the_sign_in_page_shows_no_navigation_and_no_sign_out(console):
    page = console.page
    page.goto(console.url())
    expect(page.locator("#signin")).to_be_visible()
    expect(page.locator("#nav")).to_be_hidden()
    expect(page.locator("#signout")).to_be_hidden()
    console.shot("sign-in")
    console.sign_in()
    expect(page.locator("#nav")).to_be_visible()
    expect(page.locator("#signout")).to_be_visible()
    page.click("#signout")
    expect(page.locator("#signin")).to_be_visible()
    expect(page.locator("#nav")).to_be_hidden()
    expect(page.locator("#signout")).to_be_hidden()


# ------------------------------------------------------------------ 11: the events follow the newest
def test_the_events_follow_the_newest_unless_the_user_scrolled_up(signed_in, running):
    console, page, p = signed_in, signed_in.page, signed_in.platform
    job_id = running("console-events")
    console.go(f"#/jobs/{job_id}")
    events = page.locator("#events")
    expect(events).to_contain_text("warming up")

    def note(i: int) -> None:
        body = {"event_type": "note", "message": f"step {i} checked"}
        assert p.callback(job_id, "event", body).status_code == 200
        expect(events.locator("li", has_text=f"step {i} checked")).to_have_count(1)

    for i in range(30):  # more than the list's height shows
        note(i)
    assert events.evaluate("el => el.scrollHeight > 2 * el.clientHeight")
    assert events.evaluate(AT_END), "the events list did not follow the newest event"
    events.evaluate("el => el.closest('section').scrollIntoView()")
    console.shot("job-events")

    events.hover()
    page.mouse.wheel(0, -10_000)  # the user scrolls up to read: new events leave the list there
    page.wait_for_function("el => el.scrollTop === 0", arg=events.element_handle())
    note(30)
    assert events.evaluate("el => el.scrollTop") == 0
    page.mouse.wheel(0, 10_000)  # back at the end, it follows again
    page.wait_for_function(AT_END, arg=events.element_handle())
    note(31)
    assert events.evaluate(AT_END)


# ------------------------------------------------------------------ 12: one colour per run
def test_compare_gives_each_run_one_colour_in_every_chart_and_the_table(signed_in):
    console, page, p = signed_in, signed_in.page, signed_in.platform
    # the second run has a metric the first has not: alone in that chart, it keeps its colour
    ids = [p.create_job(framework="console", model_name="console-colour", project_id="console-colours", epochs=3,
                        learning_rate=lr, config=config)["id"] for lr, config in ((0.01, {}), (0.3, {"metric": "val_extra"}))]
    for job_id in ids:
        assert p.wait_final(job_id, timeout=120)["state"] == "SUCCEEDED"
    console.go(f"#/compare?ids={','.join(ids)}")
    expect(page.locator('#compare-charts .chart[data-group="val_extra"]')).to_have_attribute("data-points", "3")
    expect(page.locator('#compare-charts .chart[data-group="train_loss"]')).to_have_attribute("data-points", "6")
    page.wait_for_function(NEXT_FRAMES)
    # group -> legend label -> the colour of its marker, as drawn
    legends = page.evaluate("""() => Object.fromEntries([...document.querySelectorAll("#compare-charts .chart")].map(
        (chart) => [chart.dataset.group, Object.fromEntries([...chart.querySelectorAll(".u-legend .u-series")]
          .filter((row) => row.querySelector(".u-marker") && row.querySelector(".u-label").textContent !== "epoch")
          .map((row) => [row.querySelector(".u-label").textContent, getComputedStyle(row.querySelector(".u-marker")).borderTopColor])
          )]))""")
    assert set(legends) >= {"train_loss", "mAP50", "lr", "val_extra"}, legends
    seen = {job_id: {colour for legend in legends.values() for label, colour in legend.items()
                     if label.startswith(job_id[:8])} for job_id in ids}
    assert all(len(colours) == 1 for colours in seen.values()), f"a run drawn in several colours: {legends}"
    colour = {job_id: colours.pop() for job_id, colours in seen.items()}
    assert len(set(colour.values())) == 2
    for job_id in ids:  # the table's column of a run wears its colour
        swatch = page.locator(f'#compare-table thead th[data-id="{job_id}"] .swatch')
        assert swatch.evaluate("el => getComputedStyle(el).backgroundColor") == colour[job_id]
    console.shot("compare-colours")


# ------------------------------------------------------------------ 13: ticks that differ
def test_the_learning_rate_axis_ticks_are_distinct_and_readable(signed_in, running):
    console, page, p = signed_in, signed_in.page, signed_in.platform
    page.add_init_script(DRAWN_TEXT)
    page.reload()  # still signed in (the tab's session storage)
    expect(page.locator("#page-jobs")).to_be_visible()
    job_id = running("console-ticks")
    rates = [0.0011, 0.0009, 0.0007, 0.00048]  # a decaying learning rate
    for epoch, lr in enumerate(rates, 1):
        body = {"event_id": f"hb-ticks-{epoch}", "epoch": epoch, "total_epochs": 4, "metrics": {"lr": lr, "train_loss": 1 / epoch}}
        assert p.callback(job_id, "heartbeat", body).status_code == 200
    console.go(f"#/jobs/{job_id}")
    page.wait_for_function("() => document.querySelector('#charts .chart[data-group=\"Learning rate\"]')?.dataset.points === '4'")
    page.wait_for_function(NEXT_FRAMES)
    canvas = page.locator('#charts .chart[data-group="Learning rate"] canvas')
    drawn = canvas.evaluate("c => window.__drawnText(c)")
    ticks = [t for t in drawn if t and t != "epoch" and not t.isdigit()]  # the epochs are whole numbers
    assert len(ticks) >= 3, drawn
    assert len(set(ticks)) == len(ticks), f"ticks that read the same: {ticks}"
    values = [float(t) for t in ticks]
    assert values == sorted(values) or values == sorted(values, reverse=True), ticks
    assert all(0.0002 <= v <= 0.0014 and len(t) <= 8 for t, v in zip(ticks, values)), ticks
    # the legend shows the value under the pointer with its significant digits
    over = page.locator('#charts .chart[data-group="Learning rate"] .u-over')
    box = over.bounding_box()
    page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2)  # the last epoch
    value = page.locator('#charts .chart[data-group="Learning rate"] .u-legend .u-series:nth-child(2) .u-value')
    expect(value).to_have_text("0.00048")
    console.shot("job-lr-ticks")


# ------------------------------------------------------------------ 14: a small image, many boxes
LABEL_BOXES = """stage => [...stage.querySelectorAll(".labels .label")].filter((g) => g.getClientRects().length)
  .map((g) => { const r = g.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; })"""


def overlapping(boxes: list[list[float]]) -> list[tuple[int, int]]:
    return [(i, j) for i, a in enumerate(boxes) for j, b in enumerate(boxes[i + 1:], i + 1)
            if a[0] < b[2] - 0.5 and b[0] < a[2] - 0.5 and a[1] < b[3] - 0.5 and b[1] < a[3] - 0.5]


def test_a_small_image_is_scaled_to_the_panel_with_readable_labels_and_a_table(signed_in):
    console, page, p = signed_in, signed_in.page, signed_in.platform
    job_id = p.create_job(framework="console", model_name="console-crowd", project_id="console-predict", epochs=1,
                          config={"boxes": 22, "class_name": "part"})["id"]
    assert p.wait_final(job_id, timeout=120)["state"] == "SUCCEEDED"
    console.go(f"#/jobs/{job_id}")
    page.set_input_files("#predict-file", files=[{"name": "small.png", "mimeType": "image/png", "buffer": png(160, 120)}])
    expect(page.locator("#predict-result svg rect.box")).to_have_count(22, timeout=120_000)
    stage, img = page.locator("#predict-result .stage"), page.locator("#predict-result img.predict-image")
    page.wait_for_function("img => img.complete && img.naturalWidth === 160", arg=img.element_handle())
    page.wait_for_function(NEXT_FRAMES)

    def check(min_width: float) -> list[list[float]]:
        shown = img.bounding_box()
        assert shown["width"] >= min_width, f"the 160 px image is drawn {shown['width']} px wide"
        assert abs(shown["height"] / shown["width"] - 0.75) < 0.02  # its own proportions
        overlay = page.locator("#predict-result svg.overlay").bounding_box()
        assert all(abs(overlay[k] - shown[k]) < 1 for k in ("x", "y", "width", "height"))
        labels = stage.evaluate(LABEL_BOXES)
        assert labels and not overlapping(labels), f"labels drawn over each other: {overlapping(labels)}"
        heights = [b[3] - b[1] for b in labels]
        assert all(13 <= hgt <= 24 for hgt in heights), heights  # text of 11-13 px on its own background
        return labels

    check(400)
    rows = page.locator("#predict-result .detections tbody tr")
    expect(rows).to_have_count(22)
    expect(rows.first).to_contain_text("part-0")
    expect(rows.first).to_contain_text("0.95")
    table, shown = page.locator("#predict-result .detections table").bounding_box(), img.bounding_box()
    assert table["x"] >= shown["x"] + shown["width"] - 1  # beside the image
    page.locator("#predict").evaluate("el => el.scrollIntoView()")
    console.shot("predict-crowded")
    # a label left out where the boxes pile up shows while its row is pointed at; the screenshots
    # resized the page (phone and back), so the labels are laid out again: read once that is done,
    # the note and the labels it counts in one go
    page.wait_for_function(NEXT_FRAMES)
    left_out = stage.locator(".labels .label.crowded")
    crowded, note = page.evaluate("""() => [
      document.querySelectorAll("#predict-result .stage .labels .label.crowded").length,
      document.querySelector("#predict-result .crowded-note").textContent]""")
    assert 0 < crowded < 22 and note.startswith(f"{crowded} of 22 labels left out"), (crowded, note)
    index = left_out.last.get_attribute("data-index")
    expect(left_out.last).to_be_hidden()
    rows.nth(int(index)).hover()
    expect(stage.locator(f'.labels .label[data-index="{index}"]')).to_be_visible()
    page.mouse.move(0, 0)
    page.set_viewport_size(PHONE)
    page.wait_for_function(NEXT_FRAMES)
    check(300)  # the panel's width on a phone
    table, shown = page.locator("#predict-result .detections table").bounding_box(), img.bounding_box()
    assert table["y"] >= shown["y"] + shown["height"] - 1  # under it
    page.set_viewport_size(DESKTOP)


# ------------------------------------------------------------------ 15: a phone
def test_a_phone_shows_jobs_and_their_tables_whole_and_keeps_the_log_at_its_end(signed_in):
    console, page, p = signed_in, signed_in.page, signed_in.platform
    project = f"console-phone-{uuid.uuid4().hex[:6]}"
    say = [f"epoch {i}: loading the next batch of images from the dataset and writing the checkpoint" for i in range(60)]
    fail = "the labels of images/train/img_0003.txt name class 7, which data.yaml does not list"
    job_id = p.create_job(framework="console", model_name="console-phone", project_id=project, epochs=2,
                          config={"say": say, "fail": fail})["id"]
    assert p.wait_final(job_id, timeout=120)["state"] == "FAILED"
    console.go(f"#/jobs/{job_id}")
    logs = page.locator("#logs")
    expect(logs).to_contain_text(say[-1])
    expect(page.locator("#attempts")).to_contain_text(fail)
    assert logs.evaluate("el => el.scrollHeight > 2 * el.clientHeight") and logs.evaluate(AT_END)
    page.set_viewport_size(PHONE)  # the lines wrap again, the log stays at its end
    page.wait_for_function(NEXT_FRAMES)
    assert logs.evaluate(AT_END), "the log tail left its end on a resize"
    assert console.broken_words("#page-jobs") == []  # the attempts' dates, error type and reason among them
    attempts = page.locator("#attempts .table-wrap")
    assert attempts.evaluate("el => el.scrollWidth <= el.clientWidth")  # the reason wraps, no sideways scroll

    console.go(f"#/jobs?project_id={project}")
    row = page.locator(f'#jobs-body tr[data-id="{job_id}"]')
    expect(row).to_be_visible()
    link = row.locator(f'a[href="#/jobs/{job_id}"]')
    assert link.evaluate("a => a.getClientRects().length") == 1 and link.bounding_box()["height"] < 24  # the id on one line
    for shown in (".state", ".progress", "td.c-model"):
        expect(row.locator(shown)).to_be_visible()
    expect(row.locator("td.c-model")).to_have_text("console-phone")
    for left in ("td.c-trainer", "td.c-project", "td.c-dataset", "td.c-created"):
        expect(row.locator(left)).to_be_hidden()  # on the job's page
    console.go("#/jobs")  # every job of the session
    expect(row).to_be_visible()
    assert page.locator("#page-jobs .table-wrap").evaluate("el => el.scrollWidth <= el.clientWidth")  # no sideways scroll
    assert console.broken_words("#page-jobs") == []
    page.set_viewport_size(DESKTOP)
    console.shot("jobs-phone")
    console.go(f"#/jobs/{job_id}")
    expect(logs).to_contain_text(say[-1])
    page.locator("#attempts").evaluate("el => el.closest('section').scrollIntoView()")
    console.shot("job-phone")


# ------------------------------------------------------------------ 16: every input labelled
def test_every_input_has_a_label(signed_in):
    console, page = signed_in, signed_in.page
    for fragment, ready in (("#/jobs", "#job-filters"), ("#/submit", "#f-framework option"),
                            ("#/compare", "#compare-go"), ("#/datasets", "#upload-form")):
        console.go(fragment)
        page.wait_for_selector(ready, state="attached")
        assert page.evaluate(UNLABELLED) == [], fragment
        if fragment == "#/compare" and console.platform.api("GET", "/v1/jobs", params={"limit": 1}).json()["items"]:
            expect(page.locator("#page-compare tbody tr").first).to_be_visible()
            console.shot("compare-picker")
    for label, control in (("Dataset id", "upload-id"), ("Archive", "upload-file"), ("Description", "upload-description")):
        expect(page.get_by_label(label, exact=False).first).to_have_attribute("id", control)
        expect(page.locator(f'label[for="{control}"]')).to_be_visible()
    console.shot("datasets-labelled")


def test_a_job_waiting_out_its_retry_backoff_says_so_on_its_page(browser, deployment, sqlite_url):
    """Issue 31, item 4: a retry waits (its backoff), and the job's page says why and until when."""
    from tests.console.conftest import Console

    p = deployment.deploy(sqlite_url, VTP_RETRY_BACKOFF_S="60")
    job_id = p.create_job(framework="fake", model_name="fake-net", task_type="image_classification", epochs=1,
                          max_attempts=2, config={"behaviour": "network_error"})["id"]
    context = browser.new_context(viewport=DESKTOP)
    try:
        console = Console(context.new_page(), p)
        console.sign_in()
        console.page.wait_for_selector("#page-jobs")
        console.go(f"#/jobs/{job_id}")
        expect(console.page.locator("#job-waiting")).to_contain_text(
            "Waiting: retry backoff: attempt 2 of 2 starts at", timeout=60_000)
        expect(console.page.locator("#job-error")).to_contain_text("NETWORK_ERROR")
        console.shot("job-retry-backoff")
        p.api("POST", f"/v1/jobs/{job_id}/cancel")
        expect(console.page.locator("#job-waiting")).to_have_count(0, timeout=30_000)  # cancelled: it waits no more
        assert not console.problems, console.problems
    finally:
        context.close()
