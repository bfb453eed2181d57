"""The README's screenshots of the board (``docs/screenshots/*.png``), made again.

``make screenshots`` (``python -m tasklab_devtools.screenshots``) starts a stack of its
own (a private RabbitMQ node, the api on a fresh SQLite store, two Celery workers and
the consumer; nothing of ``make dev``'s), opens the board in Chromium in English and in
Russian, on a desktop and on a phone, and saves:

* ``rest-<lang>.png``: the board after a few tasks of each method, idle;
* ``load-<lang>.png``: a few seconds into 20 tasks spread over the two Celery workers;
* ``phone-<lang>.png`` and ``phone-activity-<lang>.png``: the same moment on a 390 px
  phone (the top of the page, then the activity charts);
* ``load-dark-en.png``: the load in the dark theme.

All pages are captured at the same instant of each scene. ``--serve`` keeps the stack
running afterwards (until Ctrl-C) and prints its URL.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, Page

from tasklab_devtools.browser import chromium
from tasklab_devtools.procs import free_port
from tasklab_devtools.rabbitmq import private_node
from tasklab_devtools.stack import LocalStack, StackConfig, celery_process
from tasklab_devtools.uiassets import ensure as ensure_ui_assets

__all__ = ["main", "take"]

ROOT = Path(__file__).resolve().parents[4]
OUT = ROOT / "docs" / "screenshots"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
#: Worker names as a reader would see them on a small deployment.
HOST = "tasklab-demo"
#: The load: 20 Celery tasks of 4-10 s over two workers of two processes each (about
#: 35 s of work for the four processes, so the queue drains visibly).
LOAD = [
    4.0,
    6.5,
    9.0,
    5.0,
    7.5,
    10.0,
    4.5,
    6.0,
    8.5,
    5.5,
    9.5,
    4.0,
    6.0,
    7.0,
    5.0,
    8.0,
    6.5,
    4.5,
    7.5,
    5.0,
]


@dataclass
class View:
    name: str
    page: Page


@contextlib.contextmanager
def demo_stack(base: Path) -> Iterator[str]:
    """The stack the screenshots show; yields the api's URL."""
    with private_node("tasklab-shots", base / "rabbitmq") as node:
        cfg = StackConfig(
            rmq_url=node.amqp_url,
            database_url=f"sqlite:///{base}/tasklab.db",
            callback_secret=secrets.token_urlsafe(32),
            api_port=free_port(),
            log_dir=base / "logs",
            rmq_management_url=node.management_url,
            celery_concurrency=2,
            consumer_concurrency=2,
            extra_env={
                "CONSUMER_NAME": f"consumer@{HOST}",
                "RETRY_BACKOFF": "0.2",
                "RETRY_BACKOFF_MAX": "1",
                "MAX_RETRIES": "2",
            },
        )
        stack = LocalStack(cfg)
        stack.add(celery_process(cfg, "celery-worker", node_name=f"celery-1@{HOST}"))
        stack.add(celery_process(cfg, "celery-worker-2", node_name=f"celery-2@{HOST}"))
        try:
            stack.start()
            yield cfg.api_base_url
        finally:
            stack.stop()


def _open(browser: Browser, url: str, name: str, lang: str, **context: Any) -> View:
    ctx = browser.new_context(base_url=url, **context)
    ctx.add_init_script(f"localStorage.setItem('tasklab.lang', '{lang}')")
    page = ctx.new_page()
    page.goto("/")
    page.wait_for_selector("#conn[data-state=live]")
    return View(name, page)


def _wait_final(http: httpx.Client, ids: list[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = [http.get(f"/api/tasks/{i}").json()["status"] for i in ids]
        if all(s in ("DONE", "FAILED", "CANCELLED") for s in statuses):
            return
        time.sleep(0.5)
    raise TimeoutError("the scene's tasks did not finish")


def _shoot(views: list[View], scene: str, out: Path, full_page: bool = True) -> list[Path]:
    time.sleep(1.3)  # a redraw of the charts (once a second) after the last event
    saved = []
    for view in views:
        path = out / f"{scene}-{view.name}.png"
        view.page.screenshot(path=str(path), full_page=full_page, animations="disabled")
        saved.append(path)
    return saved


def take(url: str, out: Path) -> list[Path]:
    """Drive the scenes against the api at ``url``; the files written."""
    out.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []
    with chromium() as browser, httpx.Client(base_url=url, timeout=30) as http:
        desk = [_open(browser, url, lang, lang, viewport=DESKTOP) for lang in ("en", "ru")]
        phones = [
            _open(
                browser,
                url,
                lang,
                lang,
                viewport=PHONE,
                device_scale_factor=2,
                is_mobile=True,
                has_touch=True,
            )
            for lang in ("en", "ru")
        ]
        dark = _open(browser, url, "dark-en", "en", viewport=DESKTOP, color_scheme="dark")
        for view in [*desk, *phones, dark]:  # the span the scenes fit in
            view.page.locator("#window-switch button[data-window='60']").click()

        def submit(**body: Any) -> str:
            got = http.post("/api/tasks", json=body)
            got.raise_for_status()
            return str(got.json()["id"])

        # At rest: a few tasks of each method have run, one failed.
        ids = [submit(method="celery", duration=d, label=f"report-{n}") for n, d in
               enumerate((1.5, 2.5, 1.0), 1)]  # fmt: skip
        ids += [submit(method="rabbitmq", duration=d) for d in (2.0, 1.2)]
        ids.append(submit(method="celery", duration=0.5, fail_times=5, label="flaky-import"))
        submit(method="sync", duration=0, kind="process_data", numbers=[4, 8, 15, 16, 23, 42])
        _wait_final(http, ids)
        saved += _shoot(desk, "rest", out)
        # Under load: 20 tasks over the two Celery workers (two processes each).
        for n, duration in enumerate(LOAD, 1):
            submit(method="celery", duration=duration, label=f"batch-{n:02}")
        time.sleep(9)
        saved += _shoot([*desk, dark], "load", out)
        saved += _shoot(phones, "phone", out, full_page=False)
        for view in phones:
            view.page.evaluate("document.querySelector('#activity').scrollIntoView()")
        saved += _shoot(phones, "phone-activity", out, full_page=False)
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tasklab_devtools.screenshots", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--out", type=Path, default=OUT, help=f"folder (default {OUT.relative_to(ROOT)})"
    )
    parser.add_argument("--serve", action="store_true", help="keep the stack running afterwards")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the stack on TERM too
    ensure_ui_assets()
    with (
        contextlib.suppress(KeyboardInterrupt),
        tempfile.TemporaryDirectory(prefix="tasklab-shots-") as tmp,
        demo_stack(Path(tmp)) as url,
    ):
        for path in take(url, args.out):
            shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            print(f"{shown}  {path.stat().st_size // 1024} KiB")
        if args.serve:
            print(f"serving {url} (Ctrl-C to stop)", flush=True)
            while True:
                time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
