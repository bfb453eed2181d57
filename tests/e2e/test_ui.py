"""The web UI in a real browser (Debian's Chromium driven by Playwright).

Screenshots of the board are saved under ``artifacts/ui/``. The last tests run the UI
against a stack of its own with authentication on (HTTP Basic).
"""

from __future__ import annotations

import contextlib
import re
import secrets
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from e2eclient import Target
from playwright.sync_api import Browser, HttpCredentials, Page, expect
from playwright.sync_api import Error as PlaywrightError

from tasklab_common.messages import StatusUpdate
from tasklab_common.models import TaskStatus
from tasklab_common.signing import sign_headers
from tasklab_devtools.browser import chromium
from tasklab_devtools.kube import Release
from tasklab_devtools.procs import free_port
from tasklab_devtools.rabbitmq import RabbitNode
from tasklab_devtools.stack import LocalStack, StackConfig

TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Browser, target: Target) -> Iterator[Page]:
    ctx = browser.new_context(base_url=target.base_url, viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(TIMEOUT_MS)
    p = ctx.new_page()
    p.goto("/")
    expect(p.locator("#conn")).to_have_attribute("data-state", "live")
    p.evaluate("window.__noReload = true")
    yield p
    ctx.close()


@pytest.fixture(scope="module")
def shots(artifacts: Path) -> Path:
    path = artifacts / "ui"
    path.mkdir(parents=True, exist_ok=True)
    return path


def row(page: Page, num: int):  # type: ignore[no-untyped-def]
    return page.locator(
        "#tasks tbody tr", has=page.get_by_role("button", name=f"Details of task {num}", exact=True)
    )


def submitted_num(form) -> int:  # type: ignore[no-untyped-def]
    """The number of the task a form just submitted, from its confirmation line."""
    msg = form.locator(".msg.ok")
    expect(msg).to_contain_text("Task ")
    match = re.search(r"Task (\d+)", msg.inner_text())
    assert match, msg.inner_text()
    return int(match.group(1))


def card(page: Page, method: str):  # type: ignore[no-untyped-def]
    return page.locator(f"form.card[data-method={method}]")


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate("window.__noReload") is True


@pytest.mark.parametrize(
    ("method", "button"), [("celery", "Send via Celery"), ("rabbitmq", "Send via RabbitMQ")]
)
def test_submit_and_watch_the_row_go_done(
    page: Page, shots: Path, method: str, button: str
) -> None:
    form = card(page, method)
    form.get_by_label("Duration, s").fill("1.5")
    form.get_by_role("button", name=button).click()
    expect(form.locator(".msg")).to_contain_text("accepted")
    num = submitted_num(form)
    r = row(page, num)
    expect(r.locator(".badge")).to_have_text({"celery": "Celery", "rabbitmq": "RabbitMQ"}[method])
    expect(r.locator("td.st")).to_have_text("IN_PROGRESS")
    page.screenshot(path=str(shots / f"board-{method}-in-progress.png"), full_page=True)
    expect(r.locator("td.st")).to_have_text("DONE")
    expect(r.locator("td").nth(4)).to_contain_text("celery@" if method == "celery" else "consumer@")
    assert_not_reloaded(page)
    page.screenshot(path=str(shots / f"board-{method}-done.png"), full_page=True)


def test_sync_shows_its_result_inline(page: Page, shots: Path) -> None:
    form = card(page, "sync")
    form.get_by_label("Kind").select_option("process_data")
    form.get_by_label("Numbers").fill("4, 8, 15, 16, 23, 42")
    form.get_by_label("Duration, s").fill("0")
    form.get_by_role("button", name="Send synchronously").click()
    result = form.locator(".result")
    expect(result).to_contain_text('"mean": 18')
    expect(result).to_contain_text('"count": 6')
    expect(form.locator(".msg")).to_contain_text("DONE")
    page.screenshot(path=str(shots / "sync-result.png"), full_page=True)


def test_the_numbers_field_shows_only_for_a_data_job(page: Page) -> None:
    """(``label { display: flex }`` used to beat the ``hidden`` attribute.)"""
    for method in ("celery", "rabbitmq", "sync"):
        form = card(page, method)
        numbers = form.get_by_label("Numbers")
        expect(numbers).to_be_hidden()
        form.get_by_label("Kind").select_option("process_data")
        expect(numbers).to_be_visible()
        form.get_by_label("Kind").select_option("process_task")
        expect(numbers).to_be_hidden()


def test_errors_are_shown_plainly(page: Page) -> None:
    form = card(page, "celery")
    form.get_by_label("Duration, s").fill("-3")
    form.get_by_role("button", name="Send via Celery").click()
    expect(form.locator(".msg")).to_contain_text("Invalid input: duration")
    expect(form.locator(".msg")).to_contain_text("greater than or equal to 0")


def test_cancel_from_the_table(page: Page, target: Target) -> None:
    task = target.submit_ok(method="rabbitmq", duration=20)
    r = row(page, task["num"])
    expect(r.locator("td.st")).to_have_text("IN_PROGRESS")
    r.get_by_role("button", name=f"Cancel {task['num']}").click()
    expect(r.locator("td.st")).to_have_text("CANCELLED")
    expect(r.get_by_role("button", name=f"Cancel {task['num']}")).to_have_count(0)
    assert target.task(task["id"])["status"] == "CANCELLED"


def test_filters_and_detail_view(page: Page, target: Target) -> None:
    failed = target.submit_ok(method="celery", duration=0, fail_times=10, label="will fail")
    target.wait_status(failed["id"])
    cells = page.locator("#tasks tbody td.st")
    page.locator("#f-status").select_option("FAILED")
    expect(cells.filter(has_not_text="FAILED")).to_have_count(0)
    expect(row(page, failed["num"])).to_be_visible()
    page.locator("#f-method").select_option("rabbitmq")
    expect(row(page, failed["num"])).to_have_count(0)
    expect(page.locator("#tasks tbody .badge").filter(has_not_text="RabbitMQ")).to_have_count(0)
    page.locator("#f-method").select_option("celery")
    expect(row(page, failed["num"])).to_be_visible()
    page.get_by_role("button", name=f"Details of task {failed['num']}", exact=True).click()
    dialog = page.locator("#detail")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("simulated failure")
    expect(dialog).to_contain_text('"fail_times": 10')
    expect(dialog).to_contain_text("will fail")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()


def test_language_switch_is_remembered(page: Page) -> None:
    page.get_by_role("button", name="Русский").click()
    expect(
        card(page, "celery").get_by_role("button", name="Отправить через Celery")
    ).to_be_visible()
    expect(page.locator("html")).to_have_attribute("lang", "ru")
    page.reload()
    expect(page.get_by_role("heading", name="Статус задач")).to_be_visible()
    page.get_by_role("button", name="English").click()
    expect(page.get_by_role("heading", name="Task status")).to_be_visible()


def test_the_language_switch_says_everything_again(page: Page, target: Target) -> None:
    """Messages already shown, the method badges, the seconds and the statuses follow the
    switch (they stayed in English)."""
    form = card(page, "sync")
    form.get_by_label("Duration, s").fill("0")
    form.get_by_role("button", name="Send synchronously").click()
    num = submitted_num(form)
    expect(form.locator(".msg")).to_contain_text(f"Task {num}: DONE")
    # (by its number's text: the row's accessible names change with the language)
    r = page.locator(
        "#tasks tbody tr", has=page.locator("button.num-btn", has_text=re.compile(rf"^{num}$"))
    )
    expect(r.locator(".badge")).to_have_text("Sync")
    expect(r.locator("td").nth(7)).to_contain_text(" s")
    page.get_by_role("button", name="Русский").click()
    try:
        expect(form.locator(".msg")).to_have_text(f"Задача {num}: готово")
        expect(r.locator(".badge")).to_have_text("Синхронно")
        expect(r.locator("td.st")).to_have_text("готово")
        expect(r.locator("td").nth(7)).to_contain_text(" с")  # noqa: RUF001 (Cyrillic)
        expect(page.locator("#f-status option[value=DONE]")).to_have_text("готово")
    finally:
        page.get_by_role("button", name="English").click()
    expect(form.locator(".msg")).to_have_text(f"Task {num}: DONE")


def test_a_sync_call_shows_that_it_waits(page: Page) -> None:
    form = card(page, "sync")
    form.get_by_label("Duration, s").fill("3")
    form.get_by_role("button", name="Send synchronously").click()
    expect(form.locator(".msg.busy")).to_have_text("Waiting for the result…")
    expect(form.locator("button")).to_be_disabled()
    expect(form.locator(".msg")).to_contain_text("DONE", timeout=15_000)
    expect(form.locator(".msg.busy")).to_have_count(0)


def test_script_payloads_render_as_text(page: Page, target: Target) -> None:
    payload = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
    form = card(page, "celery")
    form.get_by_label("Label").fill(payload)
    form.get_by_label("Duration, s").fill("0")
    form.get_by_role("button", name="Send via Celery").click()
    num = submitted_num(form)
    expect(row(page, num).locator(".label")).to_have_text(payload)
    # A worker-reported field carrying markup is text too.
    task = next(t for t in target.http.get("/api/tasks").json()["items"] if t["num"] == num)
    target.wait_status(task["id"])
    body = (
        StatusUpdate(task_id=task["id"], status=TaskStatus.FAILED, error=payload)
        .model_dump_json()
        .encode()
    )
    target.http.post(
        "/update_task_status_api/",
        content=body,
        headers={"Content-Type": "application/json", **sign_headers(target.secret, body)},
    )
    page.get_by_role("button", name=f"Details of task {num}", exact=True).click()
    expect(page.locator("#detail")).to_contain_text("<script>")
    assert page.evaluate("window.__xss") is None
    assert page.locator("#tasks img, #detail img").count() == 0


def test_header_strip_shows_queues_and_workers(page: Page) -> None:
    strip = page.locator("#strip")
    expect(strip.locator("#s-queues-value")).to_contain_text("celery:")
    expect(strip.locator("#s-queues-value")).to_contain_text("direct_tasks:")
    expect(strip.locator("#s-workers li.online", has_text="celery@")).to_have_count(1)
    expect(strip.locator("#s-workers li.online", has_text="consumer@")).to_have_count(1)


def test_the_header_counts_agree_with_the_table(page: Page, target: Target) -> None:
    """Waiting and running come from the task store, as the table's rows do: they never
    lag it (the broker's queue figures did, by 5-10 s), and the broker's figures are
    labelled as the broker's, with their age."""
    tasks = [target.submit_ok(method="rabbitmq", duration=3) for _ in range(6)]
    first = target.wait_status(tasks[0]["id"], {"IN_PROGRESS"})
    expect(row(page, first["num"]).locator("td.st")).to_have_text("IN_PROGRESS")

    def store() -> tuple[str, str]:
        o = target.http.get("/api/overview").json()
        return str(o["in_progress"]), str(o["waiting"])

    def shown() -> tuple[str, str]:
        return page.locator("#s-inprogress").inner_text(), page.locator("#s-waiting").inner_text()

    # While tasks start and end, the strip shows the store's figures (checked while the
    # store holds still around the reading; it follows each task event in under a second).
    seen = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        before = store()
        time.sleep(0.8)
        now = shown()
        if store() == before:
            seen.append((before, now))
            if before == now and before != ("0", "0"):
                break
    assert seen and seen[-1][0] == seen[-1][1] != ("0", "0"), seen
    for task in tasks:
        target.wait_status(task["id"])
    expect(row(page, tasks[-1]["num"]).locator("td.st")).to_have_text("DONE")
    expect(page.locator("#s-inprogress")).to_have_text("0", timeout=2_000)
    expect(page.locator("#s-waiting")).to_have_text("0", timeout=2_000)
    expect(page.locator("#s-queues .stat-label")).to_have_text("Broker queues (ready / unacked)")
    expect(page.locator("#s-queues-value")).to_have_attribute(
        "title", re.compile(r"as the broker counted them \d+ s ago")
    )


def test_narrow_screen(browser: Browser, target: Target, shots: Path) -> None:
    ctx = browser.new_context(base_url=target.base_url, viewport={"width": 390, "height": 844})
    p = ctx.new_page()
    p.goto("/")
    expect(p.locator("#conn")).to_have_attribute("data-state", "live")
    width = p.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone ({width}px)"
    expect(card(p, "celery").get_by_role("button", name="Send via Celery")).to_be_in_viewport()
    p.screenshot(path=str(shots / "narrow.png"), full_page=True)
    ctx.close()


def test_callback_to_screen_latency(page: Page, target: Target, artifacts: Path) -> None:
    """How long a status callback takes to show on an open page (recorded, loosely bounded)."""
    task = target.submit_ok(method="rabbitmq", duration=30)
    r = row(page, task["num"])
    expect(r.locator("td.st")).to_have_text("IN_PROGRESS")
    samples = []
    for attempt in range(1, 11):
        # RETRYING(1), IN_PROGRESS(2), RETRYING(2), IN_PROGRESS(3)...: each moves it forward.
        status = TaskStatus.RETRYING if attempt % 2 else TaskStatus.IN_PROGRESS
        n = (attempt + 1) // 2 if attempt % 2 else attempt // 2 + 1
        body = (
            StatusUpdate(task_id=task["id"], status=status, attempt=n, worker="latency-probe")
            .model_dump_json()
            .encode()
        )
        started = time.perf_counter()
        resp = target.http.post(
            "/update_task_status_api/",
            content=body,
            headers={"Content-Type": "application/json", **sign_headers(target.secret, body)},
        )
        assert resp.json()["applied"], resp.text
        page.wait_for_function(
            "([id, st]) => document.querySelector(`tr[data-id='${id}']`)?.dataset.status === st",
            arg=[task["id"], status.value],
            polling="raf",
        )
        samples.append((time.perf_counter() - started) * 1000)
    target.http.post(f"/api/tasks/{task['id']}/cancel")
    p50, worst = statistics.median(samples), max(samples)
    (artifacts / "ui-latency.txt").write_text(
        f"callback -> visible in the page, ms: p50 {p50:.1f}, max {worst:.1f}, n {len(samples)}\n"
    )
    print(f"callback -> visible: p50 {p50:.1f} ms, max {worst:.1f} ms")
    assert worst < 1000


def test_page_recovers_after_api_restart(page: Page, target: Target) -> None:
    if target.stack is None:
        pytest.skip("needs to restart the api process")
    api = target.stack.processes["api"]
    api.terminate()
    expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting")
    api.start()
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    # What happened while the page was reconnecting shows up, still without reload.
    task = target.submit_ok(method="celery", duration=0)
    expect(row(page, task["num"]).locator("td.st")).to_have_text("DONE")
    assert_not_reloaded(page)


# ------------------------------------------------------------------ with authentication

AUTH_VHOST = "ui-auth"


@dataclass
class AuthStack:
    base_url: str
    user: str
    password: str


@contextlib.contextmanager
def vhost_stack(
    broker: RabbitNode, vhost: str, data: Path, log_dir: Path, **settings: Any
) -> Iterator[StackConfig]:
    """An api and a consumer of their own (no Celery worker) on a vhost of their own of
    the session's broker, so that the session stack's workers never see their tasks."""
    with broker.vhost(vhost) as rmq_url:
        cfg = StackConfig(
            rmq_url=rmq_url,
            database_url=f"sqlite:///{data}/tasklab.db",
            callback_secret=secrets.token_urlsafe(32),
            api_port=free_port(),
            log_dir=log_dir,
            **settings,
        )
        stack = LocalStack(cfg)
        try:
            stack.start(celery=False)
            yield cfg
        finally:
            stack.stop()


@pytest.fixture(scope="module")
def auth_stack(
    request: pytest.FixtureRequest,
    release: Release | None,
    artifacts: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AuthStack]:
    """An api with a Basic login and a consumer, on a vhost of their own (so that the
    session stack's workers never see these tasks). Local runs only."""
    if release is not None:
        pytest.skip("starts an api with authentication on this machine")
    broker: RabbitNode = request.getfixturevalue("broker")
    user, password = "operator", secrets.token_urlsafe(18)
    with vhost_stack(
        broker,
        AUTH_VHOST,
        tmp_path_factory.mktemp("auth-stack"),
        artifacts / "logs-auth",
        consumer_concurrency=2,
        rmq_management_url=broker.management_url,
        extra_env={"AUTH_BASIC_USER": user, "AUTH_BASIC_PASSWORD": password},
    ) as cfg:  # (readiness, /readyz, needs no login)
        yield AuthStack(base_url=cfg.api_base_url, user=user, password=password)


def test_with_basic_auth_the_page_needs_the_login(browser: Browser, auth_stack: AuthStack) -> None:
    """Without a login, or with a wrong one, the page is answered 401 with the challenge."""
    challenge = 'Basic realm="tasklab"'
    # No login: headless Chromium has no one to ask, and fails the navigation.
    ctx = browser.new_context(base_url=auth_stack.base_url)
    p = ctx.new_page()
    with (
        p.expect_response(auth_stack.base_url + "/") as answer,
        pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"),
    ):
        p.goto("/")
    assert answer.value.status == 401
    assert answer.value.headers["www-authenticate"] == challenge
    ctx.close()
    # A wrong login: tried once, refused again; the browser shows the 401.
    wrong: HttpCredentials = {"username": auth_stack.user, "password": "not-the-password"}
    ctx = browser.new_context(base_url=auth_stack.base_url, http_credentials=wrong)
    p = ctx.new_page()
    resp = p.goto("/")
    assert resp is not None and resp.status == 401
    assert resp.headers["www-authenticate"] == challenge
    assert resp.json()["detail"].startswith("invalid credentials")
    expect(p.locator("body")).not_to_contain_text("Send via Celery")
    ctx.close()


def test_with_basic_auth_the_board_works(
    browser: Browser, auth_stack: AuthStack, shots: Path
) -> None:
    """The browser sends the login with the page, its assets, its fetch() calls and
    the live stream (EventSource): a submitted task goes DONE on the open page."""
    ctx = browser.new_context(
        base_url=auth_stack.base_url,
        viewport={"width": 1280, "height": 900},
        http_credentials={"username": auth_stack.user, "password": auth_stack.password},
    )
    ctx.set_default_timeout(TIMEOUT_MS)
    p = ctx.new_page()
    refused: list[str] = []  # requests that ended in a 401 (not the challenge round trips)
    p.on("response", lambda r: refused.append(r.url) if r.status == 401 else None)
    resp = p.goto("/")
    assert resp is not None and resp.status == 200
    expect(p.locator("#conn")).to_have_attribute("data-state", "live")  # the live stream
    p.evaluate("window.__noReload = true")
    form = card(p, "rabbitmq")
    form.get_by_label("Duration, s").fill("1")
    form.get_by_role("button", name="Send via RabbitMQ").click()
    expect(form.locator(".msg")).to_contain_text("accepted")
    num = submitted_num(form)
    r = row(p, num)
    expect(r.locator("td.st")).to_have_text("IN_PROGRESS")
    expect(r.locator("td.st")).to_have_text("DONE")
    expect(r.locator("td").nth(4)).to_contain_text("consumer@")
    expect(p.locator("#s-workers li.online", has_text="consumer@")).to_have_count(1)  # overview
    assert_not_reloaded(p)
    p.screenshot(path=str(shots / "board-basic-auth.png"), full_page=True)
    assert refused == [], refused
    ctx.close()


NO_STATS_VHOST = "ui-no-stats"


def test_without_broker_stats_workers_are_not_called_offline(
    request: pytest.FixtureRequest,
    browser: Browser,
    release: Release | None,
    artifacts: Path,
    tmp_path: Path,
) -> None:
    """An api without RMQ_MANAGEMENT_URL cannot tell who consumes: the header strip says
    so ("unknown") instead of listing a busy worker as offline."""
    if release is not None:
        pytest.skip("starts an api on this machine")
    broker: RabbitNode = request.getfixturevalue("broker")
    with vhost_stack(
        broker, NO_STATS_VHOST, tmp_path, artifacts / "logs-no-stats", consumer_concurrency=1
    ) as cfg:
        ctx = browser.new_context(base_url=cfg.api_base_url)
        ctx.set_default_timeout(TIMEOUT_MS)
        p = ctx.new_page()
        p.goto("/")
        expect(p.locator("#conn")).to_have_attribute("data-state", "live")
        expect(p.locator("#s-workers")).to_contain_text("none seen")
        form = card(p, "rabbitmq")
        form.get_by_label("Duration, s").fill("0")
        form.get_by_role("button", name="Send via RabbitMQ").click()
        expect(row(p, submitted_num(form)).locator("td.st")).to_have_text("DONE")
        worker = p.locator("#s-workers li", has_text="consumer@")
        expect(worker).to_contain_text("online status unknown")
        expect(p.locator("#s-workers li.online")).to_have_count(0)
        expect(p.locator("#s-queues-value")).to_have_text("unknown")
        ctx.close()
