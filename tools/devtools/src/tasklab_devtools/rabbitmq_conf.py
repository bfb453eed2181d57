"""A private RabbitMQ node that runs a given ``rabbitmq.conf`` and definitions file.

The chart's tests render the broker's configuration (``rabbitmq.conf``,
``definitions.json``, ``enabled_plugins``) and load it into a real local node with
:class:`ConfiguredRabbitNode`. Only what cannot apply to a private node on this machine
is replaced by the node's own values: the listener keys (the node listens on loopback
ports of its own), the default user (the node's generated credentials; in the cluster
a setup container adds it from a Secret) and the path of the definitions file (written
into the node's directory). Everything else, policies, ``consumer_timeout``, resource
limits, logging, is used as rendered.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

from tasklab_devtools.rabbitmq import RabbitNode

__all__ = ["ConfiguredRabbitNode", "conf_key", "merge_conf"]

#: Keys the private node sets itself: where it listens, its one user, stats refresh.
NODE_KEY_PREFIXES = (
    "listeners.",
    "management.tcp.",
    "management.ssl.",
    "prometheus.tcp.",
    "prometheus.ssl.",
    "distribution.listener.",
    "default_user",
    "default_pass",
    "default_vhost",
    "default_permissions.",
    # How fresh the management API's queue figures are (tests wait on them).
    "collect_statistics_interval",
)
DEFINITIONS_PATH_KEY = "definitions.local.path"


def conf_key(line: str) -> str | None:
    """The key of a ``rabbitmq.conf`` line (``key = value``), None for comments/blanks."""
    text = line.strip()
    if not text or text.startswith("#") or "=" not in text:
        return None
    return text.split("=", 1)[0].strip()


def _is_node_key(key: str) -> bool:
    return any(key == prefix or key.startswith(prefix) for prefix in NODE_KEY_PREFIXES)


def merge_conf(node_conf: str, rendered_conf: str, definitions_path: Path) -> str:
    """The node's listener and user lines, then every other line of ``rendered_conf``.

    ``definitions.local.path`` is pointed at ``definitions_path``.
    """
    own = [line for line in node_conf.splitlines() if (key := conf_key(line)) and _is_node_key(key)]
    kept = []
    for line in rendered_conf.splitlines():
        key = conf_key(line)
        if key is not None and _is_node_key(key):
            continue
        if key == DEFINITIONS_PATH_KEY:
            line = f"{DEFINITIONS_PATH_KEY} = {definitions_path}"
        kept.append(line)
    header = "## Listeners and user of this private node"
    return "\n".join([header, *own, "## As rendered", *kept, ""])


class ConfiguredRabbitNode(RabbitNode):
    """A :class:`RabbitNode` whose configuration is a rendered ``rabbitmq.conf``."""

    #: Its topology comes from the rendered definitions alone.
    apply_topology = False

    def __init__(
        self,
        *args: Any,
        conf: str,
        definitions: str,
        enabled_plugins: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.rendered_conf = conf
        self.definitions = definitions
        self.enabled_plugins = enabled_plugins
        #: True when the node's user had to be created with rabbitmqctl (the
        #: configuration and definitions did not create it).
        self.reconciled = False

    @classmethod
    def allocate_configured(
        cls,
        name_prefix: str,
        base_dir: Path,
        *,
        conf: str,
        definitions: str,
        enabled_plugins: str | None = None,
    ) -> ConfiguredRabbitNode:
        """A node on free loopback ports (like :meth:`RabbitNode.allocate`)."""
        free = RabbitNode.allocate(name_prefix, base_dir)
        password = secrets.token_urlsafe(24)
        while password.startswith("-"):  # rabbitmqctl would take it for an option
            password = secrets.token_urlsafe(24)
        return cls(
            free.name,
            free.base_dir,
            free.amqp_port,
            free.mgmt_port,
            free.prometheus_port,
            free.dist_port,
            password=password,
            conf=conf,
            definitions=definitions,
            enabled_plugins=enabled_plugins,
        )

    @property
    def config_path(self) -> Path:
        """The ``rabbitmq.conf`` the node runs with."""
        return self.base_dir / "rabbitmq.conf"

    def _reconcile_user(self) -> None:
        """Wait for the boot to create the user before reconciling it.

        With definitions imported at boot, the management API answers (401) before the
        node has created its default user; give the boot a moment to do so.
        """
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            status = self.api("GET", "api/whoami").status_code
            if status == 200:
                return
            time.sleep(0.25)
        self.reconciled = True
        super()._reconcile_user()

    def _write_config(self) -> None:
        super()._write_config()
        definitions_path = self.base_dir / "definitions.json"
        definitions_path.write_text(self.definitions)
        merged = merge_conf(self.config_path.read_text(), self.rendered_conf, definitions_path)
        self.config_path.write_text(merged)
        if self.enabled_plugins is not None:
            (self.base_dir / "enabled_plugins").write_text(self.enabled_plugins)
