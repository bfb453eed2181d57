"""The local stack a test suite runs against, on a broker node of its own.

Every suite that starts the real services (e2e, faults, monitoring, the chart's broker
test) builds its :class:`~tasklab_devtools.stack.StackConfig` here: the api on SQLite in
a folder of the suite's, a fresh callback secret, a free port (and one for the signed
routes where the suite wants them apart, as in the chart), the node's AMQP and
management URLs, and its logs under :func:`artifacts_dir`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from tasklab_devtools.procs import free_port
from tasklab_devtools.rabbitmq import RabbitNode
from tasklab_devtools.stack import StackConfig

__all__ = ["artifacts_dir", "stack_config"]


def artifacts_dir() -> Path:
    """Where the tests leave what people read afterwards (logs, tables, figures):
    ``TASKLAB_ARTIFACTS``, by default ``artifacts`` in the working directory."""
    path = Path(os.environ.get("TASKLAB_ARTIFACTS", "artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def stack_config(
    node: RabbitNode,
    data: Path,
    logs: str,
    extra_env: Mapping[str, str] | None = None,
    *,
    internal_port: bool = False,
) -> StackConfig:
    """A stack on ``node`` with its task store in ``data`` and its logs in
    ``artifacts_dir()/logs``; ``extra_env`` added to every service's environment.
    ``internal_port``: the workers' signed routes on a port of their own
    (``API_INTERNAL_PORT``), as the chart runs the api; else on its one port."""
    return StackConfig(
        rmq_url=node.amqp_url,
        database_url=f"sqlite:///{data}/tasklab.db",
        callback_secret=secrets.token_urlsafe(32),
        api_port=free_port(),
        api_internal_port=free_port() if internal_port else None,
        log_dir=artifacts_dir() / logs,
        rmq_management_url=node.management_url,
        extra_env=dict(extra_env or {}),
    )
