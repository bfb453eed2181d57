"""The fault-injection suite's fixtures: its own broker node and local stack.

Everything runs for real on this machine, on loopback: a private RabbitMQ node (own
name, ports and data directory), the api on SQLite, a Celery worker and the
consumer, each started with the same command as its container image. The stack
lives for this package (it is stopped when the suite ends, not at the end of a
larger session). Each scenario gets a :class:`~faultkit.Scenario`, which brings back
whatever the previous scenario left stopped before it starts.

At the end, the table of scenarios is printed and written to
``artifacts/faults.md``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tasklab_devtools.rabbitmq import private_node
from tasklab_devtools.stack import LocalStack
from tasklab_devtools.testing.stacks import artifacts_dir, stack_config

from .faultkit import RESULTS, FaultStack, Scenario, render_table

#: Short delays, so that retries and reconnections take seconds, not minutes. The
#: submission limit is lower than the default so that the flood meets it early.
FAULT_ENV = {
    "RETRY_BACKOFF": "0.2",
    "RETRY_BACKOFF_MAX": "1",
    "MAX_RETRIES": "3",
    "REQUEUE_DELAY": "0.5",
    "RECONNECT_BACKOFF": "0.2",
    "RECONNECT_BACKOFF_MAX": "2",
    "CALLBACK_MAX_WAIT": "120",
    "PUBLISH_TIMEOUT": "3",
    "BROKER_CONNECT_TIMEOUT": "2",
    "SUBMIT_RATE": "50",
    "SUBMIT_BURST": "200",
    "CONSUMER_NAME": "consumer-faults",
    # No proxy is trusted: a client cannot choose the address it is limited by.
    "FORWARDED_ALLOW_IPS": "",
    # Scenario 9: a task of this duration kills the process that runs it, every time;
    # the api gives up on an attempt started this many times without an outcome.
    "TASKLAB_FAULT_CRASH_ON_DURATION": "0.321",
    "DELIVERY_LIMIT": "3",
}


@pytest.fixture(scope="package")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    with private_node("tasklab-faults", tmp_path_factory.mktemp("faults-rabbitmq")) as node:
        data = tmp_path_factory.mktemp("faults-stack")
        cfg = stack_config(node, data, "logs-faults", FAULT_ENV)
        # Stopped at the end, also when a scenario left it (or the broker) down.
        with LocalStack(cfg) as stack:
            yield FaultStack(node, stack, data / "tasklab.db", cfg.callback_secret)


@pytest.fixture
def scenario(request: pytest.FixtureRequest, fault_stack: FaultStack) -> Iterator[Scenario]:
    """The scenario of one test, labelled by its ``scenario`` marker (or its name)."""
    fault_stack.ensure_running()
    # A scenario that failed may leave work in flight: let it end before the next one.
    leftover = fault_stack.settle()
    marker = request.node.get_closest_marker("scenario")
    label = str(marker.args[0]) if marker else request.node.name
    run = Scenario(label, fault_stack).begin()
    if leftover:
        run.note(f"started with an earlier scenario's messages still queued: {leftover}")
    try:
        yield run
    finally:
        run.end()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "scenario(label): the row label of a fault scenario")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    table = render_table(RESULTS)
    terminalreporter.write_sep("=", "fault injection")
    terminalreporter.write_line(table)
    path = artifacts_dir() / "faults.md"
    path.write_text(f"# Fault injection\n\n```\n{table}\n```\n")
    terminalreporter.write_line(f"(also in {path})")
