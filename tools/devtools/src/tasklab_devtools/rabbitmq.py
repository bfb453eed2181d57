"""A private RabbitMQ node for ``make dev`` and the tests.

A :class:`RabbitNode` is a complete RabbitMQ node that lives in one directory: its own
node name, database, logs, configuration, Erlang cookie and ports, all listeners on
127.0.0.1. It runs next to any other node of the machine (a system ``rabbit@host`` on
5672, other test nodes) without touching it; the Erlang port mapper (epmd) is shared.

The node's only user is created from its configuration when its database is first
initialised (so no ``guest`` user ever exists) and reconciled with ``rabbitmqctl`` if
the directory was initialised with other credentials.

:func:`check_amqp_login` performs a real AMQP 0-9-1 login (handshake, ``PLAIN``
authentication, ``connection.open`` of the virtual host) with the standard library.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, unquote, urlsplit

import httpx

from tasklab_common.queues import (
    CANCEL_EXCHANGE,
    CELERY_QUEUE,
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    DIRECT_QUEUE,
)
from tasklab_devtools.debian import ensure_package, install_hint
from tasklab_devtools.procs import ManagedProcess, descendant_pids

__all__ = [
    "CONSUMER_TIMEOUT_MS",
    "AmqpLoginError",
    "RabbitNode",
    "check_amqp_login",
    "ensure_rabbitmq_server",
    "rabbitmq_server_path",
]

#: Where Debian's ``rabbitmq-server`` package puts the real start script. (The one in
#: ``/usr/sbin`` is a wrapper that switches to the ``rabbitmq`` system user.)
DEBIAN_SERVER_SCRIPT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
_SAFE_CREDENTIAL = re.compile(r"[A-Za-z0-9._~-]+")


def rabbitmq_server_path() -> Path | None:
    """The ``rabbitmq-server`` start script, or None when RabbitMQ is not installed."""
    if DEBIAN_SERVER_SCRIPT.exists():
        return DEBIAN_SERVER_SCRIPT
    found = shutil.which("rabbitmq-server")
    return Path(found) if found else None


def _install_hint() -> str:
    return install_hint("rabbitmq-server")


def ensure_rabbitmq_server() -> None:
    """Make sure ``rabbitmq-server`` is installed, installing it with apt as root.

    Raises :class:`RuntimeError` with the command to run when it is missing and cannot
    be installed from here (not root, or no apt-get).
    """
    ensure_package("rabbitmq-server", lambda: rabbitmq_server_path() is not None)


# --------------------------------------------------------------------- AMQP login


class AmqpLoginError(RuntimeError):
    """The broker answered but refused the login (or spoke no AMQP 0-9-1)."""


def _shortstr(value: str) -> bytes:
    data = value.encode()
    return struct.pack("!B", len(data)) + data


def _longstr(data: bytes) -> bytes:
    return struct.pack("!I", len(data)) + data


def _long_at(data: bytes, offset: int) -> int:
    value: int = struct.unpack_from("!I", data, offset)[0]
    return value


def _longstr_at(data: bytes, offset: int) -> bytes:
    return data[offset + 4 : offset + 4 + _long_at(data, offset)]


def _method_frame(class_id: int, method_id: int, args: bytes) -> bytes:
    payload = struct.pack("!HH", class_id, method_id) + args
    return struct.pack("!BHI", 1, 0, len(payload)) + payload + b"\xce"


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise AmqpLoginError("the broker closed the connection during the login")
        data += chunk
    return data


def _recv_method(sock: socket.socket) -> tuple[int, int, bytes]:
    """The next method frame as ``(class_id, method_id, arguments)``; heartbeats skipped."""
    while True:
        frame_type, _channel, size = struct.unpack("!BHI", _recv_exact(sock, 7))
        payload = _recv_exact(sock, size + 1)[:-1]
        if frame_type == 1:
            class_id, method_id = struct.unpack("!HH", payload[:4])
            return class_id, method_id, payload[4:]
        if frame_type != 8:
            raise AmqpLoginError(f"unexpected AMQP frame type {frame_type}")


def _refusal(args: bytes) -> AmqpLoginError:
    """An error from the arguments of a ``connection.close`` sent by the broker."""
    code = struct.unpack("!H", args[:2])[0]
    text = args[3 : 3 + args[2]].decode(errors="replace")
    return AmqpLoginError(f"the broker refused the connection: {code} {text}")


def check_amqp_login(url: str, timeout: float = 5.0) -> None:
    """Log in to the broker at ``url`` (``amqp://user:password@host:port/vhost``).

    Returns when the login and the opening of the virtual host succeeded. Raises
    :class:`AmqpLoginError` if the broker refused, :class:`OSError` if it could not be
    reached (refused connection, timeout).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        raise ValueError("expected an amqp:// or amqps:// URL with a host")
    user = unquote(parts.username or "guest")
    password = unquote(parts.password or "guest")
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    port = parts.port or (5671 if parts.scheme == "amqps" else 5672)

    with socket.create_connection((parts.hostname, port), timeout=timeout) as raw:
        sock = raw
        if parts.scheme == "amqps":
            sock = ssl.create_default_context().wrap_socket(raw, server_hostname=parts.hostname)
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        class_id, method_id, args = _recv_method(sock)
        if (class_id, method_id) != (10, 10):
            raise AmqpLoginError(f"expected connection.start, got {class_id}.{method_id}")
        mechanisms = _longstr_at(args, 6 + _long_at(args, 2))
        if b"PLAIN" not in mechanisms.split():
            raise AmqpLoginError(f"the broker does not offer PLAIN login ({mechanisms!r})")

        capabilities = _shortstr("authentication_failure_close") + b"t\x01"
        properties = (
            _shortstr("product")
            + b"S"
            + _longstr(b"tasklab-devtools")
            + _shortstr("capabilities")
            + b"F"
            + _longstr(capabilities)
        )
        response = b"\x00" + user.encode() + b"\x00" + password.encode()
        sock.sendall(
            _method_frame(
                10,
                11,
                _longstr(properties) + _shortstr("PLAIN") + _longstr(response) + _shortstr("en_US"),
            )
        )
        class_id, method_id, args = _recv_method(sock)
        if (class_id, method_id) == (10, 50):
            raise _refusal(args)
        if (class_id, method_id) != (10, 30):
            raise AmqpLoginError(f"expected connection.tune, got {class_id}.{method_id}")
        channel_max, frame_max, _heartbeat = struct.unpack("!HIH", args[:8])
        sock.sendall(_method_frame(10, 31, struct.pack("!HIH", channel_max, frame_max, 0)))
        sock.sendall(_method_frame(10, 40, _shortstr(vhost) + _shortstr("") + b"\x00"))
        class_id, method_id, args = _recv_method(sock)
        if (class_id, method_id) == (10, 50):
            raise _refusal(args)
        if (class_id, method_id) != (10, 41):
            raise AmqpLoginError(f"expected connection.open-ok, got {class_id}.{method_id}")
        sock.sendall(_method_frame(10, 50, struct.pack("!H", 200) + _shortstr("bye") + bytes(4)))
        _recv_method(sock)  # connection.close-ok


# --------------------------------------------------------------------- the node


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _beam_environ(pid: int) -> dict[str, str] | None:
    """The environment of an Erlang VM process, None for other (or gone) processes."""
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() != "beam.smp":
            return None
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {key.decode(errors="replace"): value.decode(errors="replace") for key, value in pairs}


def _kill_pids(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_pids_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(Path(f"/proc/{pid}").exists() and not _is_zombie(pid) for pid in pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    return stat[stat.rindex(b")") + 2 :].startswith(b"Z")


#: The broker policies of the chart's definitions (default values), by name.
TOPOLOGY_POLICIES: dict[str, dict[str, Any]] = {
    "tasklab-work-queues": {
        "pattern": f"^({re.escape(CELERY_QUEUE)}|{re.escape(DIRECT_QUEUE)})$",
        "apply-to": "queues",
        "priority": 10,
        "definition": {
            "max-length": 100000,
            "overflow": "reject-publish",
            "dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        },
    },
    "tasklab-dead-letters": {
        "pattern": f"^{re.escape(DEAD_LETTER_QUEUE)}$",
        "apply-to": "queues",
        "priority": 10,
        "definition": {"max-length": 10000, "overflow": "drop-head"},
    },
}


#: ``consumer_timeout`` of the private nodes (make dev, the tests): the chart's, 8 h.
CONSUMER_TIMEOUT_MS = 8 * 3600 * 1000


class RabbitNode:
    """A private RabbitMQ node whose files all live in ``base_dir``.

    ``base_dir`` belongs to this node (one directory per node); reusing it with the
    same ``name`` keeps the node's queues, messages and users across restarts. All
    listeners (AMQP, management, prometheus, distribution) are bound to 127.0.0.1.
    Use it as a context manager to start it and stop it at the end of the block.
    Once started, it has the chart's dead-letter exchange, queue and policies.
    """

    #: Declare the chart's topology after each start (see :meth:`declare_topology`).
    apply_topology = True

    def __init__(
        self,
        name: str,
        base_dir: Path,
        amqp_port: int,
        mgmt_port: int,
        prometheus_port: int,
        dist_port: int,
        user: str = "tasklab",
        password: str | None = None,
    ) -> None:
        self.name = name if "@" in name else f"{name}@localhost"
        self.base_dir = Path(base_dir).absolute()
        self.amqp_port = amqp_port
        self.mgmt_port = mgmt_port
        self.prometheus_port = prometheus_port
        self.dist_port = dist_port
        self.user = user
        # Alphanumeric first: rabbitmqctl would read a leading "-" as an option.
        self.password = password if password is not None else "p" + secrets.token_urlsafe(24)
        for label, value in (("user", self.user), ("password", self.password)):
            if not _SAFE_CREDENTIAL.fullmatch(value):
                raise ValueError(f"the {label} may only use letters, digits and . _ ~ -")
        #: Seconds the last successful :meth:`start` took (None before).
        self.start_seconds: float | None = None
        self._server: ManagedProcess | None = None

    @classmethod
    def allocate(cls, name_prefix: str, base_dir: Path) -> RabbitNode:
        """A node named ``<prefix>-<random>@localhost`` on free loopback ports."""
        sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(4)]
        try:
            for sock in sockets:
                sock.bind(("127.0.0.1", 0))
            amqp, mgmt, prometheus, dist = (sock.getsockname()[1] for sock in sockets)
        finally:
            for sock in sockets:
                sock.close()
        name = f"{name_prefix}-{secrets.token_hex(4)}@localhost"
        return cls(name, base_dir, amqp, mgmt, prometheus, dist)

    def __repr__(self) -> str:
        return f"RabbitNode({self.name!r}, amqp_port={self.amqp_port})"

    # ----------------------------------------------------------------- addresses

    @property
    def amqp_url(self) -> str:
        """``amqp://user:password@127.0.0.1:PORT/`` (the default virtual host ``/``)."""
        return (
            f"amqp://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@127.0.0.1:{self.amqp_port}/"
        )

    @property
    def management_url(self) -> str:
        """Base URL of the management UI and HTTP API, ending in ``/``."""
        return f"http://127.0.0.1:{self.mgmt_port}/"

    @property
    def prometheus_url(self) -> str:
        """Base URL of the prometheus endpoint (``metrics``, ``metrics/detailed``)."""
        return f"http://127.0.0.1:{self.prometheus_port}/"

    @property
    def credentials(self) -> tuple[str, str]:
        """``(user, password)`` of the node's administrator."""
        return self.user, self.password

    # ----------------------------------------------------------------- files

    @property
    def _mnesia_base(self) -> Path:
        return self.base_dir / "mnesia"

    @property
    def _server_log(self) -> Path:
        return self.base_dir / "server.log"

    def _env(self) -> dict[str, str]:
        """Environment of the server and of ``rabbitmqctl`` for this node."""
        inherited = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("RABBITMQ_", "ERL_"))
        }
        return {
            **inherited,
            # The Erlang cookie lives in $HOME: keep it in the node's directory.
            "HOME": str(self.base_dir / "home"),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_CONF_ENV_FILE": str(self.base_dir / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.base_dir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base_dir / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base_dir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self._mnesia_base),
            "RABBITMQ_LOG_BASE": str(self.base_dir / "log"),
            "RABBITMQ_PID_FILE": str(self.base_dir / "rabbitmq.pid"),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def _write_config(self) -> None:
        for directory in (self.base_dir, self.base_dir / "home", self._mnesia_base):
            directory.mkdir(parents=True, exist_ok=True)
        (self.base_dir / "rabbitmq-env.conf").write_text(
            "# Intentionally empty: this node is configured by environment variables.\n"
        )
        (self.base_dir / "enabled_plugins").write_text(
            "[rabbitmq_management,rabbitmq_prometheus].\n"
        )
        config = self.base_dir / "rabbitmq.conf"
        config.touch(mode=0o600)
        config.chmod(0o600)
        config.write_text(
            "\n".join(
                [
                    f"listeners.tcp.1 = 127.0.0.1:{self.amqp_port}",
                    "management.tcp.ip = 127.0.0.1",
                    f"management.tcp.port = {self.mgmt_port}",
                    "prometheus.tcp.ip = 127.0.0.1",
                    f"prometheus.tcp.port = {self.prometheus_port}",
                    # Used only when the database is first created (instead of guest).
                    "default_vhost = /",
                    f"default_user = {self.user}",
                    f"default_pass = {self.password}",
                    "default_user_tags.administrator = true",
                    "default_permissions.configure = .*",
                    "default_permissions.read = .*",
                    "default_permissions.write = .*",
                    # Queue stats in the management API are refreshed every second.
                    "collect_statistics_interval = 1000",
                    # As the chart's broker: above the longest delivery (RabbitMQ's
                    # default, 30 min, is below the longest task, 1 h).
                    f"consumer_timeout = {CONSUMER_TIMEOUT_MS}",
                    "",
                ]
            )
        )

    # ----------------------------------------------------------------- lifecycle

    def is_running(self) -> bool:
        """Whether the node's server process (started by this object) is running."""
        return self._server is not None and self._server.running()

    def start(self, timeout: float = 90) -> None:
        """Start the node (no-op if running) and wait until it accepts logins.

        Ready means: an AMQP login with :attr:`credentials` succeeds and the management
        API answers. A node left running from an earlier run in the same directory is
        stopped first. Raises :class:`TimeoutError` or :class:`RuntimeError` (with the
        log tail) when the node does not come up; it is then killed.
        """
        if self.is_running():
            return
        began = time.monotonic()
        server_script = rabbitmq_server_path()
        if server_script is None:
            raise RuntimeError(f"rabbitmq-server is not installed; run: {_install_hint()}")
        self._write_config()
        self._stop_leftover()
        busy = [
            port
            for port in (self.amqp_port, self.mgmt_port, self.prometheus_port, self.dist_port)
            if _port_open(port)
        ]
        if busy:
            raise RuntimeError(
                f"cannot start {self.name}: port(s) {busy} on 127.0.0.1 already in use"
            )
        self._server = ManagedProcess(
            f"rabbitmq-{self.name.split('@')[0]}",
            [str(server_script)],
            self._env(),
            cwd=self.base_dir,
            log_path=self._server_log,
        )
        self._server.start()
        try:
            self._wait_ready(began + timeout)
            if self.apply_topology:
                self.declare_topology()
        except BaseException:
            self.kill()
            raise
        self.start_seconds = time.monotonic() - began

    def declare_topology(self) -> None:
        """Declare what the chart's broker definitions hold (idempotent).

        The dead-letter exchange and queue, the cancel exchange, and the policies of
        the work queues (length limit, dead-lettering) and of the dead-letter queue, with
        the chart's default values (``tests/chart`` checks they match).
        """
        vhost = "%2F"
        exchange = quote(DEAD_LETTER_EXCHANGE, safe="")
        queue = quote(DEAD_LETTER_QUEUE, safe="")
        fanout = {"type": "fanout", "durable": True}
        calls: list[tuple[str, str, dict[str, Any]]] = [
            ("PUT", f"api/exchanges/{vhost}/{exchange}", fanout),
            ("PUT", f"api/exchanges/{vhost}/{quote(CANCEL_EXCHANGE, safe='')}", fanout),
            ("PUT", f"api/queues/{vhost}/{queue}", {"durable": True}),
            ("POST", f"api/bindings/{vhost}/e/{exchange}/q/{queue}", {"routing_key": ""}),
        ]
        for name, policy in TOPOLOGY_POLICIES.items():
            calls.append(("PUT", f"api/policies/{vhost}/{name}", policy))
        for method, path, body in calls:
            self.api(method, path, json=body).raise_for_status()

    def _wait_ready(self, deadline: float) -> None:
        reconciled = False
        last = "not started yet"
        with httpx.Client(timeout=3.0, auth=self.credentials) as http:
            while True:
                if not self.is_running():
                    raise RuntimeError(f"{self.name} exited while starting:\n{self.log_tail()}")
                try:
                    overview = http.get(f"{self.management_url}api/overview")
                    if overview.status_code == 401 and not reconciled:
                        reconciled = True
                        self._reconcile_user()
                        continue
                    if overview.status_code != 200:
                        raise AmqpLoginError(f"management API: HTTP {overview.status_code}")
                    check_amqp_login(self.amqp_url, timeout=3.0)
                except (OSError, httpx.HTTPError, AmqpLoginError) as exc:
                    last = f"{type(exc).__name__}: {exc}"
                else:
                    return
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"{self.name} not ready in time ({last}):\n{self.log_tail()}"
                    )
                time.sleep(0.25)

    def _reconcile_user(self) -> None:
        """Give the node's user the configured password, tags and permissions.

        Needed only when the directory's database was created with other credentials.
        """
        listed = json.loads(self.rabbitmqctl("list_users", "--quiet", "--formatter", "json"))
        names = {entry["user"] for entry in listed}
        if self.user in names:
            self.rabbitmqctl("change_password", self.user, self.password)
        else:
            self.rabbitmqctl("add_user", self.user, self.password)
        self.rabbitmqctl("set_user_tags", self.user, "administrator")
        self.rabbitmqctl("set_permissions", "-p", "/", self.user, ".*", ".*", ".*")
        if "guest" in names and self.user != "guest":
            self.rabbitmqctl("delete_user", "guest")

    def _leftover_pids(self) -> list[int]:
        """Erlang VMs of this node (same name and directory) not started by this object."""
        own = self._server.pid if self.is_running() and self._server is not None else None
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == own:
                continue
            env = _beam_environ(int(entry))
            if (
                env is not None
                and env.get("RABBITMQ_NODENAME") == self.name
                and env.get("RABBITMQ_MNESIA_BASE") == str(self._mnesia_base)
            ):
                found.append(int(entry))
        return found

    def _stop_leftover(self) -> None:
        """Stop a node of this directory left running by a crashed earlier run."""
        for pid in self._leftover_pids():
            family = [pid, *descendant_pids(pid)]
            _kill_pids([pid], signal.SIGTERM)
            if not _wait_pids_gone([pid], 30):
                _kill_pids(family, signal.SIGKILL)
            _wait_pids_gone(family, 10)

    def _wait_ports_free(self, timeout: float) -> None:
        ports = (self.amqp_port, self.mgmt_port, self.prometheus_port, self.dist_port)
        deadline = time.monotonic() + timeout
        while any(_port_open(port) for port in ports):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.name}: ports still in use after {timeout:g} s")
            time.sleep(0.05)

    def stop(self, timeout: float = 30) -> None:
        """Stop the node gracefully (SIGTERM; SIGKILL after ``timeout``); waits for ports."""
        server = self._server
        if server is None or server.pid is None:
            return
        family = [server.pid, *descendant_pids(server.pid)]
        if server.running():
            # The start script forwards SIGTERM to the Erlang VM, which shuts down cleanly.
            server.kill(signal.SIGTERM)
            server.wait(timeout)
        server.terminate(5)
        if not _wait_pids_gone(family, 10):
            _kill_pids(family, signal.SIGKILL)
            _wait_pids_gone(family, 10)
        self._wait_ports_free(30)

    def kill(self) -> None:
        """SIGKILL the server, the Erlang VM and its helpers (a crash); waits for ports."""
        server = self._server
        if server is None or server.pid is None:
            return
        family = [server.pid, *descendant_pids(server.pid)]
        server.kill_group(signal.SIGKILL)
        _kill_pids(family, signal.SIGKILL)
        server.terminate(10)
        _wait_pids_gone(family, 10)
        self._wait_ports_free(30)

    def restart(self, timeout: float = 90) -> None:
        """Stop (if running) and start again with the same directory and credentials."""
        self.stop()
        self.start(timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------- tools

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server's console output and of the node's log file."""
        parts = []
        for path in (self._server_log, self.base_dir / "log" / f"{self.name}.log"):
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    def log_text(self) -> str:
        """Everything the node logged: its console output (where a node configured with
        ``log.console`` writes) and its log file."""
        paths = (self._server_log, self.base_dir / "log" / f"{self.name}.log")
        return "\n".join(p.read_text(errors="replace") for p in paths if p.exists())

    def rabbitmqctl(self, *args: str, timeout: float = 60) -> str:
        """Run ``rabbitmqctl -n NODE ARGS``; its output, or RuntimeError with it."""
        script = rabbitmq_server_path()
        if script is None:
            raise RuntimeError(f"rabbitmq-server is not installed; run: {_install_hint()}")
        done = subprocess.run(
            [str(script.parent / "rabbitmqctl"), "-n", self.name, *args],
            env=self._env(),
            cwd=self.base_dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {args[0] if args else ''} failed ({done.returncode}):\n"
                f"{done.stdout}{done.stderr}"
            )
        return done.stdout

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Call the management HTTP API, e.g. ``api("GET", "api/overview")``."""
        url = self.management_url + path.lstrip("/")
        return httpx.request(method, url, auth=self.credentials, timeout=10.0, **kwargs)

    def queue_counts(self, queue: str, vhost: str = "/") -> tuple[int, int]:
        """``(ready, unacked)`` messages of a queue, from the management API.

        The API's figures are refreshed every second (see the config), so they lag the
        broker a little: use :meth:`wait_queue_counts` to wait for expected values.
        """
        response = self.api("GET", f"api/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}")
        response.raise_for_status()
        data = response.json()
        return int(data.get("messages_ready", 0)), int(data.get("messages_unacknowledged", 0))

    def wait_queue_counts(
        self, queue: str, ready: int, unacked: int, timeout: float = 30, vhost: str = "/"
    ) -> None:
        """Poll :meth:`queue_counts` until it equals ``(ready, unacked)``."""
        deadline = time.monotonic() + timeout
        while (counts := self.queue_counts(queue, vhost)) != (ready, unacked):
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"queue {queue!r}: (ready, unacked) = {counts} after {timeout:g} s, "
                    f"expected {(ready, unacked)}"
                )
            time.sleep(0.25)

    @contextlib.contextmanager
    def vhost(self, name: str) -> Iterator[str]:
        """A vhost of its own for the node's user (so that other stacks' workers never see
        its messages): its AMQP URL; deleted, with everything in it, at exit."""
        self.rabbitmqctl("add_vhost", name)
        try:
            self.rabbitmqctl("set_permissions", "-p", name, self.user, ".*", ".*", ".*")
            yield self.amqp_url.rstrip("/") + "/" + name
        finally:
            self.rabbitmqctl("delete_vhost", name)

    def purge(self, queue: str, vhost: str = "/") -> None:
        """Delete every ready message of a queue."""
        path = f"api/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}/contents"
        self.api("DELETE", path).raise_for_status()


@contextlib.contextmanager
def private_node(name_prefix: str, base_dir: Path) -> Iterator[RabbitNode]:
    """A started private node (installing RabbitMQ first if needed); stopped at exit."""
    ensure_rabbitmq_server()
    node = RabbitNode.allocate(name_prefix, base_dir)
    with node:
        yield node
