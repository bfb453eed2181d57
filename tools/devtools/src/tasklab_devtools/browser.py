"""Debian's Chromium for the browser tests, launched the way this machine allows, and the
helpers every browser test and the screenshots share (the board at a width, in a
language; its cards, rows and charts)."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from playwright.sync_api import (
    Browser,
    Locator,
    Page,
    Playwright,
    ViewportSize,
    sync_playwright,
)
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

CHROMIUM = os.environ.get("TASKLAB_CHROMIUM", "/usr/bin/chromium")
#: No sandbox (root), no GPU, and nothing that reaches out to the network by itself.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
)


def launch_chromium(pw: Playwright) -> Browser:
    """Headless Chromium; RuntimeError with the fix when it is not installed."""
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"no Chromium at {CHROMIUM}: run scripts/bootstrap.sh --test")
    return pw.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS), headless=True)


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """A launched Chromium (see :func:`launch_chromium`), closed at exit."""
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            yield browser
        finally:
            browser.close()


# ------------------------------------------------------------------ the board

#: The widths the UI is tested and shown at: a laptop, and a phone (390 px, as an
#: iPhone 12-15 in portrait).
VIEWPORTS: dict[str, ViewportSize] = {
    "desktop": {"width": 1280, "height": 900},
    "phone": {"width": 390, "height": 844},
}
#: Collects what the page's Content-Security-Policy refused (added before any script).
CSP_WATCH = (
    "window.__csp = [];"
    "document.addEventListener('securitypolicyviolation',"
    " (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
)


def open_board(
    browser: Browser,
    base_url: str,
    viewport: str = "desktop",
    *,
    lang: str | None = None,
    timeout_ms: float = 30_000,
    **context: Any,
) -> Page:
    """A new context's page on the board, live (its event stream connected), with the
    CSP watch installed; ``lang`` ('en', 'ru') as if chosen before. Close it with
    ``page.context.close()``."""
    ctx = browser.new_context(base_url=base_url, viewport=VIEWPORTS[viewport], **context)
    ctx.set_default_timeout(timeout_ms)
    ctx.add_init_script(CSP_WATCH)
    if lang is not None:
        ctx.add_init_script(f"localStorage.setItem('tasklab.lang', {lang!r})")
    page = ctx.new_page()
    page.goto("/")
    page.wait_for_selector("#conn[data-state=live]")
    return page


def card(page: Page, method: str) -> Locator:
    """The submit card of ``method``, brought into view: on a phone, where one card
    shows at a time, by its button in the method switch."""
    switch = page.locator(f"#method-switch button[data-method={method}]")
    if switch.is_visible():
        switch.click()
    return page.locator(f"form.card[data-method={method}]")


def task_row(page: Page, num: int) -> Locator:
    """The task table's row of task ``num`` (by its number's text: any language)."""
    return page.locator(
        "#tasks tbody tr", has=page.locator("button.num-btn", has_text=re.compile(rf"^{num}$"))
    )


#: Records, per task number, each status the task table showed, in order (a
#: MutationObserver): a state a loaded browser showed for less than one of ``expect``'s
#: polls still counts.
_STATUS_TRAIL = """() => {
  if (window.__trail) return;
  window.__trail = {};
  const note = () => {
    for (const tr of document.querySelectorAll('#tasks tbody tr')) {
      const num = tr.querySelector('button.num-btn')?.textContent.trim();
      const st = tr.querySelector('td.st')?.textContent.trim().split(/\\s+/)[0];
      if (!num || !st) continue;
      const trail = (window.__trail[num] ||= []);
      if (trail[trail.length - 1] !== st) trail.push(st);
    }
  };
  note();
  new MutationObserver(note).observe(document.querySelector('#tasks'),
    {subtree: true, childList: true, characterData: true, attributes: true});
}"""


def watch_statuses(page: Page) -> None:
    """Start recording the statuses the task table shows (see :func:`wait_for_statuses`)."""
    page.evaluate(_STATUS_TRAIL)


def wait_for_statuses(
    page: Page, num: int, statuses: list[str], timeout_ms: float = 30_000
) -> None:
    """Wait until task ``num``'s row has shown ``statuses`` in this order (others may come
    between), as recorded since :func:`watch_statuses`; the trail it showed otherwise."""
    try:
        page.wait_for_function(
            """([num, want]) => {
              let i = 0;
              for (const st of (window.__trail || {})[num] || []) if (st === want[i]) i++;
              return i === want.length;
            }""",
            arg=[str(num), statuses],
            timeout=timeout_ms,
        )
    except PlaywrightTimeoutError:
        trail = page.evaluate("(num) => (window.__trail || {})[num] || []", str(num))
        raise AssertionError(
            f"task {num}'s row did not show {' -> '.join(statuses)} within "
            f"{timeout_ms / 1000:g} s; it showed {trail}"
        ) from None


def submitted_num(form: Locator) -> int:
    """The number of the task a card just submitted, from its confirmation line."""
    msg = form.locator(".msg.ok")
    msg.wait_for()
    match = re.search(r"(\d+)", msg.inner_text())
    if match is None:
        raise AssertionError(f"no task number in {msg.inner_text()!r}")
    return int(match.group(1))


def chart_data(page: Page, canvas: str) -> Any:
    """What a Chart.js chart draws (its datasets and labels, and its axis labels)."""
    return page.evaluate(
        """(sel) => {
          const chart = window.Chart && Chart.getChart(document.querySelector(sel));
          if (!chart) return null;
          return {
            labels: chart.data.labels || null,
            datasets: chart.data.datasets.map((d) => ({
              label: d.label, color: d.backgroundColor,
              data: d.data.map((p) => (p && p.task ? {x: p.x, y: p.y, num: p.task.num,
                status: p.task.status, worker: p.task.worker} : p)) })),
            ticks: Object.fromEntries(Object.entries(chart.scales)
              .map(([k, s]) => [k, s.ticks.map((t) => t.label)])),
          };
        }""",
        canvas,
    )
