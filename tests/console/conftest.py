"""The web console in a real browser: Debian's Chromium (/usr/bin/chromium, installed by .ci/run)
driven by Playwright through `executable_path` (Playwright's own browser builds cannot be
downloaded here), against the real platform of tests/fixtures/platform.py.

`console` is a signed-in page at 1280×800 that records every console error, uncaught exception
and dialog: the test fails on any (a failed request that the test provokes on purpose, a 401 or
422, is listed in `console.expected_statuses`). `console.shot(name)` saves screenshots at
1280×800 and 390×844 under var/screenshots/ (git-ignored) for a reviewer to look at.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "var" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
_FAILED_LOAD = re.compile(r"Failed to load resource: the server responded with a status of (\d+)")
# the words in the visible cells of the tables under `root` that the browser broke across lines
# ("succeede d", "12/4/2 026" in a column squeezed on a phone): a break after a hyphen is the
# word's own, and only a word wider than half its table's box (a long path) may break
_BROKEN_WORDS = """root => {
  const broken = [];
  const ctx = document.createElement("canvas").getContext("2d");
  for (const cell of root.querySelectorAll("td, th")) {
    if (!cell.getClientRects().length) continue;
    const table = cell.closest("table");
    const room = (table.closest(".table-wrap") || table.parentElement).clientWidth / 2;
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      ctx.font = getComputedStyle(node.parentElement).font;
      for (const m of node.data.matchAll(/[^\\s-]+-?/g)) {
        const range = document.createRange();
        range.setStart(node, m.index);
        range.setEnd(node, m.index + m[0].length);
        const lines = new Set([...range.getClientRects()].filter((r) => r.width > 0).map((r) => Math.round(r.bottom)));
        if (lines.size > 1 && ctx.measureText(m[0]).width < room) broken.push(m[0]);
      }
    }
  }
  return broken;
}"""


# package scope, not session: Playwright's sync API runs an event loop in the test thread while
# it is open, and every later test that calls asyncio.run() (or a Serve handle's .result())
# would find one running; the browser closes when the console tests are done
@pytest.fixture(scope="package")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail("the console tests need Debian's Chromium: apt-get install chromium (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


class Console:
    def __init__(self, page, platform):
        self.page = page
        self.platform = platform
        self.problems: list[str] = []
        self.dialogs: list[str] = []
        self.expected_statuses: set[int] = set()
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.problems.append(f"uncaught: {exc}"))
        page.on("dialog", self._on_dialog)

    def _on_console(self, msg) -> None:
        if msg.type != "error":
            return
        failed = _FAILED_LOAD.search(msg.text)
        if failed and int(failed[1]) in self.expected_statuses:
            return
        self.problems.append(f"console error: {msg.text}")

    def _on_dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def url(self, fragment: str = "") -> str:
        return f"{self.platform.base_url}/{fragment}"

    def sign_in(self, token: str | None = None) -> None:
        self.page.goto(self.url())
        self.page.fill("#token", token or self.platform.api_token)
        self.page.click("#signin button[type=submit]")

    def go(self, fragment: str) -> None:
        """Navigate inside the console (#/...) as a user following a link would."""
        self.page.evaluate("f => { location.hash = f }", fragment)

    def broken_words(self, root: str) -> list[str]:
        return self.page.locator(root).evaluate(_BROKEN_WORDS)

    def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}-1280x800.png"))
        self.page.set_viewport_size(PHONE)
        self.page.wait_for_timeout(150)  # charts refit on resize
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}-390x844.png"), full_page=True)
        self.page.set_viewport_size(DESKTOP)


@pytest.fixture
def console(browser, platform):
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(20_000)
    c = Console(page, platform)
    yield c
    context.close()
    assert not c.problems, c.problems
    assert not c.dialogs, c.dialogs


@pytest.fixture
def signed_in(console):
    console.sign_in()
    console.page.wait_for_selector("#page-jobs")
    return console
