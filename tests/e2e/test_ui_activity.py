"""The board's activity panels in a real browser: the timeline of tasks per worker and
the throughput chart (Chart.js, from the api's own /api/activity and the live stream),
at desktop and phone widths, in both languages and both themes, under the api's CSP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from e2eclient import Target
from playwright.sync_api import Browser, Page, expect

from tasklab_devtools.browser import chart_data, open_board

PAYLOAD = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'


def css(page: Page, name: str) -> str:
    return str(
        page.evaluate(
            "(n) => getComputedStyle(document.documentElement).getPropertyValue(n).trim()", name
        )
    )


def runs(page: Page) -> list[dict[str, Any]]:
    """The timeline's task bars (its third dataset), with the colour each is drawn in."""
    data = chart_data(page, "#timeline")
    assert data is not None, "no timeline chart"
    bars = data["datasets"][2]
    return [{**p, "color": bars["color"][i]} for i, p in enumerate(bars["data"])]


@pytest.fixture(scope="module")
def history(target: Target) -> dict[str, Any]:
    """Six Celery tasks for three processes (three of them wait in the queue), two
    direct ones, one with markup in its label: all done."""
    celery = [target.submit_ok(method="celery", duration=1.5) for _ in range(6)]
    direct = [target.submit_ok(method="rabbitmq", duration=1, label=PAYLOAD) for _ in range(2)]
    done = {t["num"]: target.wait_status(t["id"]) for t in celery + direct}
    assert {t["status"] for t in done.values()} == {"DONE"}
    return done


def last_5_minutes(page: Page) -> Page:
    page.locator("#window-switch button[data-window='300']").click()
    return page


@pytest.fixture(scope="module")
def boards(browser: Browser, target: Target, history: dict[str, Any]) -> Iterator[list[Page]]:
    """The board at both widths in both languages, opened after the history ran, showing
    the last 5 minutes."""
    pages = [
        last_5_minutes(open_board(browser, target.base_url, width, lang=lang))
        for width in ("desktop", "phone")
        for lang in ("en", "ru")
    ]
    yield pages
    for p in pages:
        p.context.close()


def test_the_timeline_draws_each_task_on_its_worker(
    boards: list[Page], history: dict[str, Any]
) -> None:
    for p in boards:
        ru = p.evaluate("document.documentElement.lang") == "ru"
        p.locator("#activity").scroll_into_view_if_needed()
        expect(p.locator("#timeline")).to_be_visible()
        p.wait_for_function("() => Chart.getChart(document.querySelector('#timeline'))")
        bars = {b["num"]: b for b in runs(p)}
        assert set(history) <= set(bars), (sorted(history), sorted(bars))
        for num, task in history.items():
            bar = bars[num]
            # On the lane of the worker that ran it, from its start to its end (in
            # seconds before now), in the colour of its status.
            assert bar["y"].startswith(f"w:{task['worker']}:"), bar
            assert bar["x"][0] < bar["x"][1] <= 0
            assert bar["x"][1] - bar["x"][0] == pytest.approx(task["run_seconds"], abs=0.05)
            assert bar["color"] == css(p, "--st-done")
        lanes = {b["y"].rsplit(":", 1)[0] for b in runs(p)}
        assert any(lane.startswith("w:celery@") for lane in lanes), lanes
        assert any(lane.startswith("w:consumer@") for lane in lanes), lanes
        # Three of the six Celery tasks waited for a free process: their time in the
        # queue leads into their bar.
        queued = chart_data(p, "#timeline")["datasets"][0]["data"]
        assert sum(1 for q in queued if q["num"] in history and q["x"][1] - q["x"][0] > 1) >= 3
        data = chart_data(p, "#timeline")
        assert ("сейчас" if ru else "now") in data["ticks"]["x"]
        summary = p.locator("#timeline-summary li[data-lane^='celery@']").first
        expect(summary).to_contain_text("готово" if ru else "done")
        # Text drawn on the canvas is no markup; nothing of the label got into the page.
        assert p.evaluate("window.__xss") is None
        assert p.locator("#activity img, #activity script").count() == 0
        width = p.evaluate("window.innerWidth")
        assert p.evaluate("document.documentElement.scrollWidth") <= width
        assert p.evaluate("window.__csp") == [], "the CSP refused something"


def test_the_chart_counts_submissions_completions_and_queue_depth(
    boards: list[Page], history: dict[str, Any]
) -> None:
    for p in boards:
        ru = p.evaluate("document.documentElement.lang") == "ru"
        p.wait_for_function("() => Chart.getChart(document.querySelector('#throughput'))")
        data = chart_data(p, "#throughput")
        labels = [d["label"] for d in data["datasets"]]
        assert labels == (
            ["отправлено", "завершено", "ждут (глубина очереди)", "выполняются"]
            if ru
            else ["submitted", "finished", "waiting (queue depth)", "running"]
        )
        submitted, finished, waiting, _ = (d["data"] for d in data["datasets"])
        assert len(submitted) == 60
        assert sum(submitted) >= len(history) and sum(finished) >= len(history)
        assert max(waiting) >= 1  # the three that waited for a process
        unit = "за 5 с" if ru else "per 5 s"  # noqa: RUF001 (Cyrillic)
        expect(p.locator("#throughput-unit")).to_have_text(unit)


def test_a_running_task_grows_on_the_timeline_live(page: Page, target: Target) -> None:
    """Without a reload, from the live stream: the bar appears running, grows while the
    task runs, then is drawn done."""
    page.evaluate("window.__noReload = true")
    # Long enough that the bar still runs a second after a slow browser first shows it
    # (a 3 s task could be over by then: the bar then ends at the task's true end).
    task = target.submit_ok(method="rabbitmq", duration=10)
    point = (
        "(n) => Chart.getChart(document.querySelector('#timeline'))?.data.datasets[2].data"
        ".find((p) => p.task.num === n)"
    )

    def bar() -> dict[str, Any] | None:
        return next((b for b in runs(page) if b["num"] == task["num"]), None)

    page.wait_for_function(f"(n) => ({point})(n)?.task.status === 'IN_PROGRESS'", arg=task["num"])
    first = bar()
    assert first is not None and first["color"] == css(page, "--st-running")
    width = first["x"][1] - first["x"][0]
    page.wait_for_function(
        f"([n, w]) => {{ const p = ({point})(n);"
        " return p && p.task.status === 'IN_PROGRESS' && p.x[1] - p.x[0] > w + 1; }",
        arg=[task["num"], width],
    )
    page.wait_for_function(
        f"(n) => ({point})(n)?.task.status === 'DONE'", arg=task["num"], timeout=30_000
    )
    done = bar()
    assert done is not None and done["color"] == css(page, "--st-done")
    assert page.evaluate("window.__noReload") is True


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_theme_follows_the_system(
    browser: Browser, target: Target, history: dict[str, Any], scheme: str
) -> None:
    """The page and the charts take the system's light or dark colours, and follow a
    switch while open."""
    p = last_5_minutes(open_board(browser, target.base_url, "desktop", color_scheme=scheme))
    p.wait_for_function("() => Chart.getChart(document.querySelector('#timeline'))")
    background = p.evaluate("getComputedStyle(document.body).backgroundColor")
    level = sum(int(v) for v in background[background.index("(") + 1 : -1].split(",")[:3]) / 3
    assert (level < 60) if scheme == "dark" else (level > 200), background
    done = css(p, "--st-done")
    assert all(b["color"] == done for b in runs(p) if b["status"] == "DONE")
    p.emulate_media(color_scheme="light" if scheme == "dark" else "dark")
    assert css(p, "--st-done") != done
    p.wait_for_function(
        "(c) => Chart.getChart(document.querySelector('#timeline')).data.datasets[2]"
        ".backgroundColor.includes(c)",
        arg=css(p, "--st-done"),
    )
    assert p.evaluate("window.__csp") == []
    p.context.close()


@pytest.mark.parametrize("width", ["desktop", "phone"])
def test_the_time_span_is_chosen_and_remembered(
    browser: Browser, target: Target, width: str
) -> None:
    p = open_board(browser, target.base_url, width)
    span = p.locator("#window-switch button[data-window='300']")
    expect(span).to_have_text("5 min")
    with p.expect_response(lambda r: "/api/activity?window=300" in r.url):
        span.click()
    expect(span).to_have_attribute("aria-pressed", "true")
    p.reload()
    expect(p.locator("#window-switch button[data-window='300']")).to_have_attribute(
        "aria-pressed", "true"
    )
    p.wait_for_function(
        "() => Chart.getChart(document.querySelector('#timeline'))?.options.scales.x.min === -300"
    )
    p.locator("#window-switch button[data-window='60']").click()
    p.context.close()


def test_without_the_chart_library_the_board_still_works(browser: Browser, target: Target) -> None:
    """(An api started without `make ui-assets`.) The charts say they could not load; the
    table, the forms and the live stream work on."""
    ctx = browser.new_context(base_url=target.base_url)
    ctx.route("**/static/vendor/chart.umd.min.js", lambda route: route.abort())
    p = ctx.new_page()
    p.goto("/")
    expect(p.locator("#conn")).to_have_attribute("data-state", "live")
    expect(p.locator("#charts-off")).to_contain_text("The charts could not load")
    task = target.submit_ok(method="rabbitmq", duration=0)
    try:
        expect(p.locator(f"#tasks tbody tr[data-id='{task['id']}'] td.st")).to_have_text("DONE")
    except AssertionError as missed:
        # What the api says of the task, and what the page's stream did (to tell a page
        # that heard nothing from a task that never ended).
        stream = p.locator("#conn").get_attribute("data-state")
        raise AssertionError(
            f"{missed}\nthe api: {target.task(task['id'])}\nthe page's stream: {stream}"
        ) from None
    ctx.close()
