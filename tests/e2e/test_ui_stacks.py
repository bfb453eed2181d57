"""The web UI against stacks of its own: with authentication on (HTTP Basic), without
the broker's statistics, and a fresh one (its empty states, one page of tasks, a task
no worker takes). Each is an api and a consumer on a vhost of their own of the
session's broker.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, HttpCredentials, Page, expect
from playwright.sync_api import Error as PlaywrightError

from tasklab_devtools.browser import (
    card,
    chart_data,
    open_board,
    submitted_num,
    task_row,
    wait_for_statuses,
    watch_statuses,
)
from tasklab_devtools.kube import Release
from tasklab_devtools.procs import free_port
from tasklab_devtools.rabbitmq import RabbitNode
from tasklab_devtools.stack import LocalStack, StackConfig

TIMEOUT_MS = 30_000


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate("window.__noReload") is True


@pytest.fixture(scope="module")
def shots(artifacts: Path) -> Path:
    path = artifacts / "ui"
    path.mkdir(parents=True, exist_ok=True)
    return path


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
    watch_statuses(p)
    form.get_by_label("Duration, s").fill("3")  # (long enough to be seen running)
    form.get_by_role("button", name="Send via RabbitMQ").click()
    expect(form.locator(".msg")).to_contain_text("accepted")
    num = submitted_num(form)
    r = task_row(p, num)
    wait_for_statuses(p, num, ["IN_PROGRESS", "DONE"])
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
        expect(task_row(p, submitted_num(form)).locator("td.st")).to_have_text("DONE")
        worker = p.locator("#s-workers li", has_text="consumer@")
        expect(worker).to_contain_text("online status unknown")
        expect(p.locator("#s-workers li.online")).to_have_count(0)
        expect(p.locator("#s-queues-value")).to_have_text("unknown")
        ctx.close()


# ------------------------------------------------------------------ a fresh board

FRESH_VHOST = "ui-fresh"


@pytest.fixture(scope="module")
def fresh(
    request: pytest.FixtureRequest,
    release: Release | None,
    artifacts: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[StackConfig]:
    """An api with an empty store and a consumer, and no Celery worker: a Celery task
    stays PENDING. Local runs only."""
    if release is not None:
        pytest.skip("starts an api on this machine")
    broker: RabbitNode = request.getfixturevalue("broker")
    with vhost_stack(
        broker,
        FRESH_VHOST,
        tmp_path_factory.mktemp("fresh-stack"),
        artifacts / "logs-fresh",
        consumer_concurrency=1,
        rmq_management_url=broker.management_url,
    ) as cfg:
        yield cfg


def test_an_empty_board_says_what_to_do(browser: Browser, fresh: StackConfig) -> None:
    """Before any task: the table, the timeline and the chart each say so and point to the
    form (an empty table under a prominent pager before); the page has its icon."""
    for width in ("desktop", "phone"):
        for lang, table_text, chart_text in (
            ("en", "No tasks yet", "Nothing in the last 1 min"),
            ("ru", "Задач пока нет", "За последние 1 мин ничего не было"),  # noqa: RUF001
        ):
            p = open_board(browser, fresh.api_base_url, width, lang=lang)
            expect(p.locator("#empty")).to_be_visible()
            expect(p.locator("#empty")).to_contain_text(table_text)
            expect(p.locator("#tasks thead")).to_be_hidden()
            expect(p.locator("#pager")).to_be_hidden()
            expect(p.locator("#timeline-empty")).to_contain_text(chart_text)
            expect(p.locator("#throughput-empty")).to_be_visible()
            expect(p.locator("#timeline-box")).to_be_hidden()
            icon = p.locator("link[rel=icon]")
            expect(icon).to_have_attribute("type", "image/svg+xml")
            got = p.request.get(fresh.api_base_url + str(icon.get_attribute("href")))
            assert got.status == 200 and got.body().startswith(b"<svg"), got.status
            assert p.evaluate("window.__csp") == []
            p.context.close()


@pytest.mark.parametrize("width", ["desktop", "phone"])
def test_one_page_of_tasks_has_no_pager_and_the_detail_no_empty_rows(
    browser: Browser, fresh: StackConfig, width: str
) -> None:
    """With one page of tasks the pager gives way to a count; the detail view of a task
    no worker took yet lists only what it has (no empty Worker, Result or times)."""
    p = open_board(browser, fresh.api_base_url, width)
    form = card(p, "celery")  # no Celery worker here: it stays PENDING
    form.get_by_label("Duration, s").fill("0")
    form.get_by_role("button", name="Send via Celery").click()
    num = submitted_num(form)
    expect(task_row(p, num).locator("td.st")).to_have_text("PENDING")
    task_row(p, num).locator("button.num-btn").click()
    dialog = p.locator("#detail")
    expect(dialog).to_be_visible()
    terms = dialog.locator("dt").all_inner_texts()
    assert "Status" in terms and "Created" in terms, terms
    assert not {"Worker", "Result", "Error", "Started", "Finished"} & set(terms), terms
    assert all(text.strip() for text in dialog.locator("dd").all_inner_texts())
    p.keyboard.press("Escape")
    expect(p.locator("#pager")).to_be_hidden()
    expect(p.locator("#count")).to_have_text(re.compile(r"^\d+ tasks?$"))
    p.context.close()


@pytest.mark.parametrize("width", ["desktop", "phone"])
def test_tasks_no_worker_takes_wait_in_their_queues_lane(
    browser: Browser, fresh: StackConfig, width: str
) -> None:
    """Celery tasks (no Celery worker here) wait on the timeline in a lane of their queue,
    growing with the time they wait, and the chart counts them as the queue's depth."""
    http = httpx.Client(base_url=fresh.api_base_url, timeout=30)
    nums = [http.post("/api/tasks", json={"method": "celery"}).json()["num"] for _ in range(2)]
    http.close()
    for lang, lane in (("en", "queue: celery"), ("ru", "очередь: celery")):
        p = open_board(browser, fresh.api_base_url, width, lang=lang)
        p.wait_for_function("() => Chart.getChart(document.querySelector('#timeline'))")
        data = chart_data(p, "#timeline")
        waiting = [b for b in data["datasets"][1]["data"] if b["y"] == "q:celery"]
        assert set(nums) <= {b["num"] for b in waiting}, waiting
        assert all(
            b["status"] == "PENDING" and b["x"][1] == pytest.approx(0, abs=1.5) for b in waiting
        )
        assert any(tick.startswith(f"{lane} · ") for tick in data["ticks"]["y"]), data["ticks"]
        expect(p.locator("#timeline-summary")).to_contain_text(lane)
        p.wait_for_function("() => Chart.getChart(document.querySelector('#throughput'))")
        depth = chart_data(p, "#throughput")["datasets"][2]["data"]
        assert depth[-1] >= len(nums), depth
        assert p.evaluate("window.__csp") == []
        p.context.close()
