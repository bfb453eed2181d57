"""The e2e suite's one fixture: the system under test.

``TASKLAB_E2E_TARGET`` picks the target; ``local`` (the default) starts the real
stack on this machine: a private RabbitMQ node (own name, ports and data dir), the
api on SQLite, a Celery worker and the consumer, each with the same command as its
container image. ``kind`` (``make e2e-kind``) drives the release on the current
kubeconfig context instead (namespace ``TASKLAB_E2E_NAMESPACE``, default tasklab),
through ``kubectl port-forward``s to the api's Services (api, and api-internal for the
workers' signed routes); there the tests that stop the
broker or read local process logs skip themselves (``broker`` and ``stack`` are None).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2eclient import Target
from playwright.sync_api import Browser, Page, expect

from tasklab_common.settings import CALLBACK_PATH
from tasklab_devtools.browser import chromium, open_board
from tasklab_devtools.kube import Release
from tasklab_devtools.rabbitmq import RabbitNode, private_node
from tasklab_devtools.stack import LocalStack
from tasklab_devtools.testing.stacks import artifacts_dir, stack_config
from tasklab_devtools.uiassets import ensure as ensure_ui_assets

#: Short retry delays so retry scenarios take seconds, not minutes.
FAST_RETRIES = {"RETRY_BACKOFF": "0.2", "RETRY_BACKOFF_MAX": "1", "MAX_RETRIES": "3"}


@pytest.fixture(scope="session")
def artifacts() -> Path:
    return artifacts_dir()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    with private_node("tasklab-e2e", tmp_path_factory.mktemp("rabbitmq")) as node:
        yield node


def target_kind() -> str:
    kind = os.environ.get("TASKLAB_E2E_TARGET", "local")
    if kind not in ("local", "kind"):
        raise pytest.UsageError(f"TASKLAB_E2E_TARGET={kind!r}: 'local' or 'kind'")
    return kind


@pytest.fixture(scope="session")
def release() -> Release | None:
    """The release on the cluster (TASKLAB_E2E_TARGET=kind), rolled out; else None."""
    if target_kind() != "kind":
        return None
    cluster = Release(namespace=os.environ.get("TASKLAB_E2E_NAMESPACE", "tasklab"))
    cluster.wait_rollouts()
    return cluster


@pytest.fixture(scope="session")
def target(
    request: pytest.FixtureRequest,
    release: Release | None,
    tmp_path_factory: pytest.TempPathFactory,
    artifacts: Path,
) -> Iterator[Target]:
    if release is not None:
        logs = artifacts / "logs-kind"
        # The api's public port: TASKLAB_E2E_URL when given (a NodePort, an ingress), else
        # a port-forward.
        given = os.environ.get("TASKLAB_E2E_URL", "").rstrip("/")
        with (
            contextlib.nullcontext(given)
            if given
            else release.port_forward("api", 8080, log_dir=logs) as url,
            # The signed routes, on the api's internal port (as a worker pod calls them).
            release.port_forward("api-internal", 8081, log_dir=logs, ready_path=None) as internal,
        ):
            yield Target(base_url=url, secret=release.callback_secret(), callback_url=internal)
        return
    broker: RabbitNode = request.getfixturevalue("broker")
    # As in the chart: the workers' signed routes on a port of their own.
    cfg = stack_config(
        broker, tmp_path_factory.mktemp("stack"), "logs", FAST_RETRIES, internal_port=True
    )
    stack = LocalStack(cfg)
    stack.start()
    try:
        yield Target(
            base_url=cfg.api_base_url,
            secret=cfg.callback_secret,
            broker=broker,
            stack=stack,
            callback_url=cfg.api_callback_url.removesuffix(CALLBACK_PATH),
        )
    finally:
        stack.stop()


# ------------------------------------------------------------------ the browser tests

#: Browser assertions wait this long (the default 5 s is short on a loaded machine, e.g.
#: for an api restarting).
expect.set_options(timeout=15_000)


class _Chromium:
    """The suite's one Chromium, ended right after the suite's last test rather than at
    the end of the session: while Playwright's sync API is open it leaves its event loop
    marked as running on this thread, and every later test that runs asyncio
    (``asyncio.run``, an async test) or a browser of its own in the same pytest session
    would be refused."""

    def __init__(self) -> None:
        self._stack: contextlib.ExitStack | None = None
        self._browser: Browser | None = None

    def get(self, local: bool) -> Browser:
        if self._browser is None:
            if local:
                ensure_ui_assets(quiet=True)
            self._stack = contextlib.ExitStack()
            self._browser = self._stack.enter_context(chromium())
        return self._browser

    def close(self) -> None:
        stack, self._stack, self._browser = self._stack, None, None
        if stack is not None:
            stack.close()


_CHROMIUM = _Chromium()
E2E_DIR = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def browser(release: Release | None) -> Browser:
    """Debian's Chromium, one for the suite; locally, the UI's chart library is built
    first if stale."""
    return _CHROMIUM.get(local=release is None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """After the suite's last test (its pages closed by then), its Chromium ends too."""
    try:
        return (yield)
    finally:
        if nextitem is None or E2E_DIR not in Path(nextitem.path).resolve().parents:
            _CHROMIUM.close()


@pytest.fixture
def page(request: pytest.FixtureRequest, browser: Browser, target: Target) -> Iterator[Page]:
    """The board, live, at the width ``request.param`` names ('desktop' unless a test
    parametrizes it indirectly: ``@pytest.mark.parametrize("page", [...], indirect=True)``)."""
    p = open_board(browser, target.base_url, getattr(request, "param", "desktop"))
    p.evaluate("window.__noReload = true")
    yield p
    p.context.close()
