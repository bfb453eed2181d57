"""The chart and the code agree: settings, commands, routes, ports, selectors, queues.

Each service's environment, as the chart renders it (Secrets resolved, $(VAR)
references expanded), is loaded into that service's own settings classes: a missing,
misspelt or invalid setting fails here, not in a crash-looping pod. The chart's
defaults of the settings it exposes as values are the code's defaults, and its schema
accepts no value the code would refuse.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import celery.beat
import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]
from celery.bin.celery import celery as celery_cli
from pydantic_settings import BaseSettings

import celery_app
from tasklab_api import __main__ as api_main
from tasklab_api.config import Settings as ApiSettings
from tasklab_api.main import create_app
from tasklab_api.origin import HostCheckMiddleware
from tasklab_common import queues
from tasklab_common.messages import MAX_DURATION_SECONDS
from tasklab_common.settings import BrokerSettings, WorkerSettings
from tasklab_consumer.settings import ConsumerSettings
from tasklab_devtools import chart, rabbitmq
from tasklab_devtools.chart import CHART_DIR, Obj
from tasklab_devtools.procs import ManagedProcess
from tasklab_devtools.rabbitmq import TOPOLOGY_POLICIES
from tasklab_devtools.stack import venv_command

SET_NAMES = [s.name for s in chart.value_sets()]

#: The settings classes each container's environment must satisfy (every variable is
#: a field of one of them, and each loads from it).
SETTINGS: dict[str, tuple[type[BaseSettings], ...]] = {
    "api": (ApiSettings,),
    "migrate": (ApiSettings,),
    "celery-worker": (celery_app.CeleryWorkerSettings,),
    "consumer": (ConsumerSettings,),
    # `celery -A celery_app beat`: the broker (the app's RMQ_URL) and the schedule.
    "celery-beat": (BrokerSettings, celery_app.BeatSettings),
}
#: Variables the chart sets that are not settings: the parts RMQ_URL is composed of,
#: and Python's own.
HELPER_VARS = {"RMQ_USERNAME", "RMQ_PASSWORD", "PYTHONDONTWRITEBYTECODE"}
#: Values of the Secrets that the external value set expects to exist already.
EXTERNAL_SECRETS = {
    ("tasklab-broker", "url"): "amqp://tasklab:secret@mq.example.com:5672/tasklab",
    **{
        (
            "tasklab-broker",
            f"{name}-url",
        ): f"amqp://tasklab-{name}:s-{name}@mq.example.com:5672/tasklab"
        for name in chart.BROKER_CLIENTS
    },
    ("tasklab-broker", "username"): "tasklab",
    ("tasklab-broker", "password"): "secret",
    ("tasklab-db", "database-url"): "postgresql://tasklab:secret@db.example.com:5432/tasklab",
    ("tasklab-callback-shared", "callback-secret"): "s" * 40,
    ("tasklab-api-auth", "api-keys"): "k" * 32 + ",\n" + "j" * 24 + "\n",
    ("tasklab-api-auth", "basic-user"): "operator",
    ("tasklab-api-auth", "basic-password"): "p" * 24,
}
#: The api's settings that hold its credentials (api.auth).
AUTH_VARS = {"API_KEYS", "AUTH_BASIC_USER", "AUTH_BASIC_PASSWORD"}


def _secret_value(docs: list[Obj], name: str, key: str) -> str:
    return chart.secret_value(docs, name, key, EXTERNAL_SECRETS)


def container_env(docs: list[Obj], container: Obj) -> dict[str, str]:
    """A container's environment as the kubelet builds it."""
    return chart.container_env(docs, container, EXTERNAL_SECRETS)


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """Exactly these variables (and no .env file) for a settings class."""
    with mock.patch.dict(os.environ, env, clear=True):
        yield


def load_settings(cls: type[BaseSettings], env: dict[str, str]) -> Any:
    with environment(env):
        return cls(_env_file=None)


def workload_containers(docs: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    for obj, spec in chart.pod_specs(docs):
        if obj["kind"] == "Deployment":
            for c in chart.containers(spec):
                yield obj, c


def field_names(*classes: type[BaseSettings]) -> set[str]:
    return {name.upper() for cls in classes for name in cls.model_fields}


def chart_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    return values


def chart_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((CHART_DIR / "values.schema.json").read_text())
    return schema


# --------------------------------------------------------------------- settings


@pytest.mark.parametrize("name", SET_NAMES)
def test_each_service_gets_every_setting_it_needs(
    rendered: dict[str, list[Obj]], name: str
) -> None:
    docs = rendered[name]
    seen = set()
    for obj, c in workload_containers(docs):
        classes = SETTINGS[c["name"]]
        seen.add(c["name"])
        env = container_env(docs, c)
        unknown = set(env) - field_names(*classes) - HELPER_VARS
        assert not unknown, f"{chart.label(obj)}/{c['name']}: not a setting: {unknown}"
        for cls in classes:
            load_settings(cls, env)  # raises on a missing or invalid setting
    beat = bool(chart.find(docs, "Deployment", "celery-beat"))
    assert seen == set(SETTINGS) - (set() if beat else {"celery-beat"})


def test_the_beat_gets_no_worker_secrets(default_docs: list[Obj]) -> None:
    """The beat only publishes to the broker: no callback secret, no api URL."""
    (beat,) = chart.find(default_docs, "Deployment", "celery-beat")
    env = container_env(default_docs, beat["spec"]["template"]["spec"]["containers"][0])
    assert not {"CALLBACK_SECRET", "API_URL", "DATABASE_URL"} & set(env)
    assert {"RMQ_URL", "HOUSEKEEPING_INTERVAL"} <= set(env)


# (values path, service container, environment variable, settings class)
VALUE_SETTINGS: list[tuple[str, str, str, type[BaseSettings]]] = [
    ("api.syncWaitSeconds", "api", "SYNC_WAIT_SECONDS", ApiSettings),
    ("api.deliveryLimit", "api", "DELIVERY_LIMIT", ApiSettings),
    ("api.stuckGraceSeconds", "api", "STUCK_GRACE_SECONDS", ApiSettings),
    ("api.historyRetentionDays", "api", "HISTORY_RETENTION_DAYS", ApiSettings),
    ("api.auth.failureLimit", "api", "AUTH_FAILURE_LIMIT", ApiSettings),
    ("retries.maxRetries", "celery-worker", "MAX_RETRIES", celery_app.CeleryWorkerSettings),
    ("retries.backoff", "celery-worker", "RETRY_BACKOFF", celery_app.CeleryWorkerSettings),
    ("retries.backoffMax", "consumer", "RETRY_BACKOFF_MAX", ConsumerSettings),
    ("consumer.concurrency", "consumer", "CONSUMER_CONCURRENCY", ConsumerSettings),
    ("consumer.isolationWaitSeconds", "consumer", "CONSUMER_ISOLATION_WAIT", ConsumerSettings),
    (
        "celeryBeat.housekeepingInterval",
        "celery-beat",
        "HOUSEKEEPING_INTERVAL",
        celery_app.BeatSettings,
    ),
]


def _lookup(tree: dict[str, Any], path: str) -> Any:
    node: Any = tree
    for key in path.split("."):
        node = node[key]
    return node


def _schema_of(path: str) -> dict[str, Any]:
    node: dict[str, Any] = chart_schema()
    for key in path.split("."):
        node = node["properties"][key]
    return node


@pytest.mark.parametrize(("path", "container", "var", "cls"), VALUE_SETTINGS)
def test_values_are_the_code_defaults(
    default_docs: list[Obj], path: str, container: str, var: str, cls: type[BaseSettings]
) -> None:
    """A setting the chart exposes as a value: its default is the code's, it reaches
    the service under the setting's name, and the schema refuses what the code refuses
    (its bounds are at least as tight as the field's)."""
    field = cls.model_fields[var.lower()]
    default = _lookup(chart_values(), path)
    assert default == field.default, f"{path}: {default} in values.yaml, {field.default} in code"
    (env,) = [
        container_env(default_docs, c)
        for _, c in workload_containers(default_docs)
        if c["name"] == container
    ]
    assert float(env[var]) == field.default
    schema = _schema_of(path)
    assert schema["type"] == ("integer" if field.annotation is int else "number"), path
    low, low_excl = schema.get("minimum"), schema.get("exclusiveMinimum")
    high, high_excl = schema.get("maximum"), schema.get("exclusiveMaximum")
    # The field's constraints (annotated_types' Ge, Gt, Le, Lt in its metadata).
    bounds = {
        kind: getattr(item, kind)
        for item in field.metadata
        for kind in ("ge", "gt", "le", "lt")
        if getattr(item, kind, None) is not None
    }
    if "ge" in bounds:
        assert (low is not None and low >= bounds["ge"]) or (
            low_excl is not None and low_excl >= bounds["ge"]
        ), (path, bounds)
    if "gt" in bounds:
        assert (low is not None and low > bounds["gt"]) or (
            low_excl is not None and low_excl >= bounds["gt"]
        ), (path, bounds)
    if "le" in bounds:
        assert (high is not None and high <= bounds["le"]) or (
            high_excl is not None and high_excl <= bounds["le"]
        ), (path, bounds)
    if "lt" in bounds:
        assert (high is not None and high < bounds["lt"]) or (
            high_excl is not None and high_excl <= bounds["lt"]
        ), (path, bounds)


def test_set_values_reach_the_services(tools: None) -> None:
    """Each of those values, set to something else, is what its service reads."""
    overrides: dict[str, float] = {
        path: 2 if cls.model_fields[var.lower()].annotation is int else 2.5
        for path, _, var, cls in VALUE_SETTINGS
    }
    # Not below the workers' report retries (see the next test).
    overrides["api.stuckGraceSeconds"] = 1000.5
    args = [a for path, value in overrides.items() for a in ("--set-json", f"{path}={value}")]
    docs = chart.render(args)
    envs = {c["name"]: container_env(docs, c) for _, c in workload_containers(docs)}
    for path, container, var, cls in VALUE_SETTINGS:
        settings = load_settings(cls, envs[container])
        assert getattr(settings, var.lower()) == overrides[path], path


def test_stuck_grace_covers_the_report_retries(tools: None) -> None:
    """The chart refuses api.stuckGraceSeconds below the workers' CALLBACK_MAX_WAIT
    (the code's default unless a worker's extraEnv sets it): a task whose report is
    still being retried must not be given up as stuck."""
    wait = WorkerSettings.model_fields["callback_max_wait"].default
    assert wait == int(wait)

    def renders(*args: str) -> bool:
        done = chart.helm("template", "t", str(CHART_DIR), *args, check=False)
        assert done.returncode == 0 or "stuckGraceSeconds" in done.stderr, done.stderr
        return done.returncode == 0

    assert renders("--set", f"api.stuckGraceSeconds={int(wait)}")
    assert not renders("--set", f"api.stuckGraceSeconds={int(wait) - 1}")
    for worker in ("celeryWorker", "consumer"):
        longer = f"{worker}.extraEnv.CALLBACK_MAX_WAIT={int(wait) + 600}"
        assert not renders("--set", longer)
        assert renders("--set", longer, "--set", f"api.stuckGraceSeconds={int(wait) + 600}")


def test_heartbeat_probes_have_a_writer(rendered: dict[str, list[Obj]]) -> None:
    """The workers' probes read HEARTBEAT_FILE: the worker code must write it.

    The chart's probes (values: heartbeatProbes) need the workers to touch the file
    named by HEARTBEAT_FILE from their main loop; WorkerSettings.heartbeat_file is
    where they read it.
    """
    uses = {
        c["name"]
        for _, c in workload_containers(rendered["default"])
        if any(e["name"] == "HEARTBEAT_FILE" for e in c.get("env", []))
    }
    assert uses == {"celery-worker", "consumer"}
    assert "heartbeat_file" in WorkerSettings.model_fields, (
        "the chart probes celery-worker and consumer through HEARTBEAT_FILE, but "
        "WorkerSettings has no heartbeat_file: add the heartbeat to the workers, or set "
        "celeryWorker.heartbeatProbes and consumer.heartbeatProbes to false"
    )


def test_heartbeat_probe_command(rendered: dict[str, list[Obj]], tmp_path: Path) -> None:
    """The probe passes on a fresh heartbeat file and fails on a stale or missing one."""
    (worker,) = chart.find(rendered["default"], "Deployment", "celery-worker")
    container = worker["spec"]["template"]["spec"]["containers"][0]
    command = container["livenessProbe"]["exec"]["command"]
    assert command[0] == "python"
    assert command == container["readinessProbe"]["exec"]["command"]
    beat = tmp_path / "heartbeat"

    def probe() -> int:
        env = {**os.environ, "HEARTBEAT_FILE": str(beat)}
        return subprocess.run([sys.executable, *command[1:]], env=env, check=False).returncode

    assert probe() != 0  # missing
    beat.touch()
    assert probe() == 0
    old = time.time() - 120
    os.utime(beat, (old, old))
    assert probe() != 0


# --------------------------------------------------------------------- the beat

#: The beat's schedule file, on the pod's /tmp volume.
SCHEDULE = "/tmp/celerybeat-schedule"
#: The longest the beat goes without writing its schedule file: it syncs when more
#: than sync_every seconds passed, checked each time it wakes up, at the latest after
#: its max interval (the app sets none: celery's default).
BEAT_MAX_INTERVAL: float = (
    celery_app.celery_app.conf.beat_max_loop_interval or celery.beat.Scheduler.max_interval or 0
)
BEAT_WRITE_GAP = celery.beat.Scheduler.sync_every + BEAT_MAX_INTERVAL


def _beat(docs: list[Obj]) -> tuple[Obj, Obj]:
    """The beat's pod spec and its container."""
    (deployment,) = chart.find(docs, "Deployment", "celery-beat")
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    return spec, container


def test_beat_command(default_docs: list[Obj]) -> None:
    """celery's beat subcommand on the real app, with options celery has, and its
    schedule file on the writable /tmp volume (the root filesystem is read-only)."""
    spec, container = _beat(default_docs)
    command = chart.service_command(container)
    assert command[:4] == ["celery", "-A", "celery_app", "beat"]
    assert celery_app.celery_app.main == "tasks"
    options = {opt for param in celery_cli.commands["beat"].params for opt in param.opts}
    for arg in command[4:]:
        assert arg.partition("=")[0] in options, arg
    assert f"--schedule={SCHEDULE}" in command
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    # What the app schedules: the housekeeping task the workers run.
    entry = celery_app.celery_app.conf.beat_schedule["housekeeping"]
    assert entry["task"] == celery_app.HOUSEKEEPING_TASK


def _beat_probe(command: list[str], schedule: Path) -> int:
    """Runs the beat's probe command here, on a schedule file at another path."""
    assert command[:2] == ["python", "-c"]
    script = command[2]
    assert f'"{SCHEDULE}*"' in script
    script = script.replace(SCHEDULE, str(schedule))
    return subprocess.run([sys.executable, "-c", script], check=False, timeout=30).returncode


def test_beat_probe_command(default_docs: list[Obj], tmp_path: Path) -> None:
    """The probes pass while the schedule file is younger than the beat's longest gap
    between two writes (with margin), and fail when it is missing or much older; any of
    the files a dbm flavour makes of it counts."""
    _, container = _beat(default_docs)
    commands = [
        container[kind]["exec"]["command"]
        for kind in ("startupProbe", "readinessProbe", "livenessProbe")
    ]
    assert commands[0] == commands[1] == commands[2]
    assert BEAT_MAX_INTERVAL > 0
    schedule = tmp_path / "celerybeat-schedule"
    assert _beat_probe(commands[0], schedule) != 0  # missing
    for suffix in celery.beat.PersistentScheduler.known_suffixes:
        path = tmp_path / f"celerybeat-schedule{suffix}"
        path.touch()
        assert _beat_probe(commands[0], schedule) == 0
        for age, healthy in ((BEAT_WRITE_GAP + 60, True), (2 * BEAT_WRITE_GAP, False)):
            then = time.time() - age
            os.utime(path, (then, then))
            assert (_beat_probe(commands[0], schedule) == 0) == healthy, (suffix, age)
        path.unlink()


def test_the_beat_runs_as_rendered(default_docs: list[Obj], tmp_path: Path) -> None:
    """The rendered command and environment start a real beat (it needs the broker only
    when a task is due): it writes its schedule where the probes look, they pass, and
    SIGTERM stops it cleanly well within its grace period."""
    spec, container = _beat(default_docs)
    schedule = tmp_path / "celerybeat-schedule"
    argv = [venv_command("celery")] + [
        a.replace(SCHEDULE, str(schedule)) for a in chart.service_command(container)[1:]
    ]
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        **container_env(default_docs, container),
    }
    beat = ManagedProcess(
        "chart-celery-beat", argv, env, cwd=tmp_path, log_path=tmp_path / "beat.log"
    )
    probe = container["startupProbe"]
    beat.start()
    try:
        deadline = time.monotonic() + probe["periodSeconds"] * probe["failureThreshold"]
        while _beat_probe(probe["exec"]["command"], schedule) != 0:
            assert beat.running(), (tmp_path / "beat.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "beat.log").read_text()
            time.sleep(0.5)
        assert _beat_probe(container["livenessProbe"]["exec"]["command"], schedule) == 0
    finally:
        started = time.monotonic()
        code = beat.terminate(timeout=spec["terminationGracePeriodSeconds"])
    log = (tmp_path / "beat.log").read_text()
    assert code == 0, log
    assert time.monotonic() - started < spec["terminationGracePeriodSeconds"] / 2, log
    assert "beat: Starting..." in log


# --------------------------------------------------------------------- commands, routes


def _console_scripts() -> set[str]:
    return {ep.name for ep in importlib.metadata.entry_points(group="console_scripts")}


def test_commands_and_modules_exist(default_docs: list[Obj]) -> None:
    scripts = _console_scripts()
    containers = {c["name"]: c for _, c in workload_containers(default_docs)}
    # Each under the image's tini (a SIGTERM while it starts must not be dropped).
    commands = {name: {**c, "command": chart.service_command(c)} for name, c in containers.items()}
    assert set(commands) == {"api", "migrate", "consumer", "celery-worker", "celery-beat"}
    assert commands["api"]["command"] == ["tasklab-api"]
    assert commands["migrate"]["command"] == ["tasklab-api", "migrate"]
    assert commands["consumer"]["command"] == ["tasklab-consumer"]
    worker = commands["celery-worker"]["command"]
    assert worker[:5] == ["celery", "-A", "celery_app", "worker", "--loglevel=info"]
    assert worker[5] == "--concurrency=3"
    assert {"tasklab-api", "tasklab-consumer", "celery"} <= scripts
    assert importlib.util.find_spec("celery_app") is not None
    assert celery_app.celery_app.main == "tasks"
    # tasklab-api accepts the subcommands and the flag the chart gives it.
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        api_main.main(["--help"])
    for word in ("serve", "migrate", "--no-migrate"):
        assert word in out.getvalue()
    assert commands["api"]["args"] == ["serve", "--no-migrate"]


def _api_routes(docs: list[Obj]) -> dict[str, set[str]]:
    (deployment,) = chart.find(docs, "Deployment", "api")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    settings = load_settings(ApiSettings, container_env(docs, container))
    # The OpenAPI document lists every API route with its methods.
    paths = create_app(settings).openapi()["paths"]
    return {path: {method.upper() for method in ops} for path, ops in paths.items()}


def test_probe_and_scrape_paths_are_real_routes(default_docs: list[Obj]) -> None:
    routes = _api_routes(default_docs)
    (deployment,) = chart.find(default_docs, "Deployment", "api")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    probes = {
        kind: container[kind]["httpGet"]["path"]
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes == {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    for path in probes.values():
        assert "GET" in routes[path]
    (monitor,) = chart.find(default_docs, "ServiceMonitor", "api")
    assert "GET" in routes[monitor["spec"]["endpoints"][0]["path"]]
    # The helm test pod's calls.
    (test_pod,) = chart.find(default_docs, "Pod")
    script = test_pod["spec"]["containers"][0]["command"][2]
    assert '"POST", "/api/tasks"' in script
    assert "POST" in routes["/api/tasks"]
    assert "GET" in routes["/api/tasks/{task_id}"]


@pytest.mark.parametrize("name", SET_NAMES)
def test_authentication_wiring(rendered: dict[str, list[Obj]], name: str) -> None:
    """With api.auth on, the api and the helm test pod get the credentials (from the
    Secret only) and nothing else does; probed, scraped and callback paths stay open."""
    docs = rendered[name]
    containers = {c["name"]: c for _, c in workload_containers(docs)}
    (test_pod,) = chart.find(docs, "Pod", "tasklab-test-submit")
    containers["test"] = test_pod["spec"]["containers"][0]
    auth_on = name == "external"  # the value set with api.auth
    for container_name, container in containers.items():
        found = {e["name"]: e for e in container.get("env", []) if e["name"] in AUTH_VARS}
        if not auth_on or container_name not in ("api", "test"):
            assert not found, (name, container_name)
            continue
        assert set(found) == AUTH_VARS, (name, container_name)
        for item in found.values():
            assert "value" not in item  # never in the manifests
            assert item["valueFrom"]["secretKeyRef"]["name"] == "tasklab-api-auth"

    api = containers["api"]
    settings = load_settings(ApiSettings, container_env(docs, api))
    assert settings.auth_enabled == auth_on
    paths = create_app(settings).openapi()["paths"]
    assert ("security" in paths["/api/tasks"]["post"]) == auth_on
    open_paths = {api[probe]["httpGet"]["path"] for probe in ("livenessProbe", "readinessProbe")}
    for monitor in chart.find(docs, "ServiceMonitor", "api"):
        open_paths |= {endpoint["path"] for endpoint in monitor["spec"]["endpoints"]}
    open_paths.add(urlsplit(container_env(docs, containers["consumer"])["API_URL"]).path)
    assert {"/healthz", "/readyz", "/update_task_status_api/"} <= open_paths
    for path in open_paths:
        assert not any("security" in op for op in paths[path].values()), path


# --------------------------------------------------------------------- wiring


def _service_target(docs: list[Obj], url: str) -> tuple[Obj, Obj]:
    """The Service a URL names (host <service>.<namespace>.svc) and its port."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    service_name, namespace, svc = host.split(".")
    assert (namespace, svc) == ("tasklab", "svc"), url
    (service,) = chart.find(docs, "Service", service_name)
    ports = [p for p in service["spec"]["ports"] if p["port"] == parts.port]
    assert ports, f"{url}: Service {service_name} has no port {parts.port}"
    return service, ports[0]


def _backing_container_port(docs: list[Obj], service: Obj, port: Obj) -> int:
    """The containerPort a Service port reaches, through its selector and target port."""
    selector = service["spec"]["selector"]
    backends = [
        (obj, spec)
        for obj, spec in chart.pod_specs(docs)
        if obj["kind"] != "Pod"
        and all(chart.pod_labels(obj).get(k) == v for k, v in selector.items())
    ]
    assert len(backends) == 1, (
        f"Service {service['metadata']['name']} selects {len(backends)} workloads"
    )
    _, spec = backends[0]
    named = {p["name"]: p["containerPort"] for c in spec["containers"] for p in c.get("ports", [])}
    target = port["targetPort"]
    container_port: int = named[target] if isinstance(target, str) else target
    return container_port


def _rabbitmq_conf(docs: list[Obj]) -> dict[str, str]:
    (config,) = chart.find(docs, "ConfigMap", "rabbitmq-config")
    lines = config["data"]["rabbitmq.conf"].splitlines()
    return {
        k.strip(): v.strip()
        for k, _, v in (line.partition("=") for line in lines if line and not line.startswith("#"))
    }


@pytest.mark.parametrize("name", SET_NAMES)
def test_urls_ports_and_selectors_agree(rendered: dict[str, list[Obj]], name: str) -> None:
    docs = rendered[name]
    envs = {c["name"]: container_env(docs, c) for _, c in workload_containers(docs)}
    # The workers call the api's callback route on its internal port (Service
    # api-internal), where the api serves the signed routes; its public Service does
    # not lead there.
    callback = [r for r in _api_routes(docs) if r.startswith("/update_task_status")]
    (public,) = chart.find(docs, "Service", "api")
    assert [_backing_container_port(docs, public, p) for p in public["spec"]["ports"]] == [
        int(envs["api"]["API_PORT"])
    ]
    for worker in ("celery-worker", "consumer"):
        url = envs[worker]["API_URL"]
        service, port = _service_target(docs, url)
        assert service["metadata"]["name"] == "api-internal"
        assert service["spec"]["type"] == "ClusterIP"
        assert urlsplit(url).path in callback
        assert _backing_container_port(docs, service, port) == int(envs["api"]["API_INTERNAL_PORT"])
        # ... under a Host name the api answers to (its DNS-rebinding check).
        host = urlsplit(url).netloc
        allowed = ApiSettings.model_validate(
            {
                "callback_secret": "x" * 32,
                "rmq_url": "amqp://u:p@rabbitmq/",
                "allowed_hosts": envs["api"]["ALLOWED_HOSTS"],
            }
        )
        check = HostCheckMiddleware(None, allowed.allowed_hosts)  # type: ignore[arg-type]
        assert check.allowed(host), (host, allowed.allowed_hosts)
    # Every service reaches the same broker and vhost, each as a user of its own.
    broker_urls = {name: urlsplit(env["RMQ_URL"]) for name, env in envs.items()}
    assert len({(u.hostname, u.port, u.path) for u in broker_urls.values()}) == 1
    users = {name: u.username for name, u in broker_urls.items() if name != "migrate"}
    assert broker_urls["migrate"].username == users["api"]  # the api's init container
    assert len(set(users.values())) == len(users) == len(envs) - 1, users
    if chart.find(docs, "StatefulSet", "rabbitmq"):
        conf = _rabbitmq_conf(docs)
        service, port = _service_target(docs, envs["api"]["RMQ_URL"])
        assert _backing_container_port(docs, service, port) == int(conf["listeners.tcp.default"])
        management = envs["api"]["RMQ_MANAGEMENT_URL"]
        service, port = _service_target(docs, management)
        assert _backing_container_port(docs, service, port) == int(conf["management.tcp.port"])
        if chart.find(docs, "ServiceMonitor", "rabbitmq"):
            (prom,) = [p for p in service["spec"]["ports"] if p["name"] == "prometheus"]
            assert _backing_container_port(docs, service, prom) == int(conf["prometheus.tcp.port"])
    # ServiceMonitors select their Service and name one of its ports; PDBs select pods.
    for monitor in chart.find(docs, "ServiceMonitor"):
        selected = [
            s
            for s in chart.find(docs, "Service")
            if all(
                s["metadata"]["labels"].get(k) == v
                for k, v in monitor["spec"]["selector"]["matchLabels"].items()
            )
        ]
        assert [s["metadata"]["name"] for s in selected] == [monitor["metadata"]["name"]]
        port_names = {p["name"] for p in selected[0]["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names
    for pdb in chart.find(docs, "PodDisruptionBudget"):
        match = pdb["spec"]["selector"]["matchLabels"]
        assert any(
            all(chart.pod_labels(o).get(k) == v for k, v in match.items())
            for o, _ in chart.pod_specs(docs)
            if o["kind"] != "Pod"
        ), chart.label(pdb)


@pytest.mark.parametrize("name", SET_NAMES)
def test_the_scaler_targets_celery_worker(rendered: dict[str, list[Obj]], name: str) -> None:
    docs = rendered[name]
    (worker,) = chart.find(docs, "Deployment", "celery-worker")
    scalers = chart.find(docs, "ScaledObject") + chart.find(docs, "HorizontalPodAutoscaler")
    assert len(scalers) <= 1
    if not scalers:
        assert "replicas" in worker["spec"]
        return
    (scaler,) = scalers
    ref = scaler["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == (
        "apps/v1",
        "Deployment",
        "celery-worker",
    )
    # The autoscaler owns the count: helm must not reset it on each upgrade.
    assert "replicas" not in worker["spec"]
    if scaler["kind"] == "ScaledObject":
        (trigger,) = scaler["spec"]["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] == "rabbitmq"
        # http: KEDA counts ready + unacknowledged messages (amqp would count ready only).
        assert meta["protocol"] == "http"
        assert meta["mode"] == "QueueLength"
        assert meta["queueName"] == queues.CELERY_QUEUE
        # The vhost of the workers' broker URL (the external example's is /tasklab).
        assert meta["vhostName"] == ("tasklab" if name == "external" else "/")
        assert set(meta) <= {
            "host", "protocol", "mode", "value", "activationValue", "queueName", "vhostName",
            "useRegex", "pageSize", "operation", "timeout", "excludeUnacknowledged", "unsafeSsl",
        }  # fmt: skip
        auth_name = trigger["authenticationRef"]["name"]
        (auth,) = chart.find(docs, "TriggerAuthentication", auth_name)
        params = {r["parameter"] for r in auth["spec"]["secretTargetRef"]}
        assert params == {"username", "password"}
        for ref in auth["spec"]["secretTargetRef"]:
            _secret_value(docs, ref["name"], ref["key"])
        behavior = scaler["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    else:
        behavior = scaler["spec"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 60


# --------------------------------------------------------------------- the broker


def _definitions(docs: list[Obj]) -> dict[str, Any]:
    (config,) = chart.find(docs, "ConfigMap", "rabbitmq-config")
    data: dict[str, Any] = json.loads(config["data"]["definitions.json"])
    return data


def test_broker_definitions_declare_the_code_queues(default_docs: list[Obj]) -> None:
    d = _definitions(default_docs)
    declared = {q["name"]: q for q in d["queues"]}
    assert set(declared) == set(queues.ALL_QUEUES)
    for q in declared.values():
        # As the services declare them: durable classic queues without arguments
        # (limits come from policies, which never conflict with a declaration).
        assert q["durable"] is True
        assert q["auto_delete"] is False
        assert q["arguments"] == {}
    exchanges = {e["name"]: e for e in d["exchanges"]}
    assert set(exchanges) == {queues.DEAD_LETTER_EXCHANGE, queues.CANCEL_EXCHANGE}
    # As the services declare the cancel exchange: durable fanout.
    assert all((e["type"], e["durable"]) == ("fanout", True) for e in exchanges.values())
    (binding,) = d["bindings"]
    assert (binding["source"], binding["destination"]) == (
        queues.DEAD_LETTER_EXCHANGE,
        queues.DEAD_LETTER_QUEUE,
    )
    policies = {p["name"]: p for p in d["policies"]}
    work = policies["tasklab-work-queues"]
    matched = {q for q in queues.ALL_QUEUES if re.fullmatch(work["pattern"], q)}
    assert matched == {queues.CELERY_QUEUE, queues.DIRECT_QUEUE}
    assert work["definition"]["overflow"] == "reject-publish"
    assert work["definition"]["dead-letter-exchange"] == queues.DEAD_LETTER_EXCHANGE
    assert work["definition"]["max-length"] > 0
    dead = policies["tasklab-dead-letters"]
    assert {q for q in queues.ALL_QUEUES if re.fullmatch(dead["pattern"], q)} == {
        queues.DEAD_LETTER_QUEUE
    }


def _permissions(docs: list[Obj]) -> dict[str, dict[str, str]]:
    """The broker users' permissions on "/" by service key (api, celery-worker...)."""
    d = _definitions(docs)
    out = {}
    for key in (*chart.BROKER_CLIENTS, "keda"):
        placeholder = f"__USER_{key.upper().replace('-', '_')}_NAME__"
        (granted,) = [p for p in d["permissions"] if p["user"] == placeholder]
        out[key] = granted
    return out


def _matches(pattern: str, names: set[str]) -> set[str]:
    return {n for n in names if re.search(pattern, n)}


def test_broker_permissions_fit_the_names_the_code_uses(default_docs: list[Obj]) -> None:
    """Each service's user may touch exactly the broker names its code uses (queues and
    exchanges of tasklab_common.queues, Celery's own from the app's configuration), so a
    renamed queue or a new one fails here, not with a 403 in a pod. (What the users can
    and cannot do on a real node: test_broker_users.py.)"""
    perms = _permissions(default_docs)
    conf = celery_app.celery_app.conf
    control, events = conf.control_exchange, conf.event_exchange
    uuid = "0f0e1d2c-3b4a-5968-8776-a5b4c3d2e1f0"
    pidbox = f"{control}.pidbox"
    celery_names = {
        queues.CELERY_QUEUE,  # its queue and exchange
        pidbox,  # remote control: broadcast exchange
        f"reply.{pidbox}",  # ... replies' exchange
        f"celery@celery-worker-5d9c7b-x2k4q.{pidbox}",  # a worker pod's mailbox queue
        f"{uuid}.reply.{pidbox}",  # a reply queue (inspect, mingle)
        events,  # heartbeats
        f"{events}.{uuid}",  # a worker's gossip queue
    }
    cancel = queues.CANCEL_EXCHANGE
    tasklab_names = {*queues.ALL_QUEUES, queues.DEAD_LETTER_EXCHANGE, cancel}
    default = "amq.default"
    notices = "amq.gen-JzTY20BRgKO-HjmUJj0wLg"  # a consumer's queue of cancel notices
    every = celery_names | tasklab_names | {default, uuid, notices, "anything-else"}
    assert _matches(perms["api"]["configure"], every) == set(queues.QUEUE_OF_METHOD.values()) | {
        pidbox,  # (a Celery task's revoke)
        cancel,  # (a rabbitmq task's cancel notice)
    }
    assert _matches(perms["api"]["write"], every) == {default, pidbox, cancel}
    assert _matches(perms["api"]["read"], every) == set()
    worker = perms["celery-worker"]
    assert _matches(worker["configure"], every) == celery_names | {uuid}  # (rpc:// replies)
    assert _matches(worker["write"], every) == celery_names | {default}
    assert _matches(worker["read"], every) == celery_names | {uuid}
    consumer = perms["consumer"]
    # Its queue, and the cancel notices: the exchange, and its own queue (the broker
    # names it) bound to it (write on the queue, read on the exchange) and consumed.
    assert _matches(consumer["configure"], every) == {queues.DIRECT_QUEUE, cancel, notices}
    assert _matches(consumer["write"], every) == {notices}
    assert _matches(consumer["read"], every) == {queues.DIRECT_QUEUE, cancel, notices}
    beat = perms["celery-beat"]
    assert _matches(beat["configure"], every) == {queues.CELERY_QUEUE}
    assert _matches(beat["write"], every) == {queues.CELERY_QUEUE}
    assert _matches(beat["read"], every) == {queues.CELERY_QUEUE}
    # The beat publishes through exchange celery (celery_app's schedule): it may not
    # write to the default exchange, through which any queue is reached.
    options = conf.beat_schedule["housekeeping"]["options"]
    assert options["exchange"] == options["routing_key"] == queues.CELERY_QUEUE
    keda = perms["keda"]  # vhost access only (the management API needs it)
    assert not any(_matches(keda[kind], every) for kind in ("configure", "write", "read"))


def test_the_cancel_permissions_follow_the_exchange_value(tools: None) -> None:
    """The users' permissions on the cancel exchange come from the chart's one value
    (rabbitmq.definitions.cancelExchange, which the definitions declare), quoted."""
    docs = chart.render(["--set", "rabbitmq.definitions.cancelExchange=other.notices"])
    exchanges = {e["name"] for e in _definitions(docs)["exchanges"]}
    assert "other.notices" in exchanges and queues.CANCEL_EXCHANGE not in exchanges
    perms = _permissions(docs)
    names = {"other.notices", "otherxnotices", queues.CANCEL_EXCHANGE}
    assert _matches(perms["api"]["write"], names) == {"other.notices"}
    assert _matches(perms["consumer"]["read"], names) == {"other.notices"}


@pytest.mark.parametrize("name", [n for n in SET_NAMES if n != "external"])
def test_each_service_logs_in_as_its_own_broker_user(
    rendered: dict[str, list[Obj]], name: str
) -> None:
    """RMQ_URL of each Deployment is composed from its own user in the bundled broker's
    Secret rabbitmq-users, and KEDA reads the management API as its own."""
    docs = rendered[name]
    for _, c in workload_containers(docs):
        service = "api" if c["name"] == "migrate" else c["name"]
        refs = {
            e["name"]: e["valueFrom"]["secretKeyRef"]
            for e in c["env"]
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        assert refs["RMQ_USERNAME"] == {"name": "rabbitmq-users", "key": f"{service}-username"}
        assert refs["RMQ_PASSWORD"] == {"name": "rabbitmq-users", "key": f"{service}-password"}
    for auth in chart.find(docs, "TriggerAuthentication"):
        refs = {r["parameter"]: r for r in auth["spec"]["secretTargetRef"]}
        assert (refs["username"]["name"], refs["username"]["key"]) == (
            "rabbitmq-users",
            "keda-username",
        )
        assert refs["password"]["key"] == "keda-password"


def test_an_external_brokers_url_is_shared_or_each_services_own(tools: None) -> None:
    """externalRabbitmq.urlKeys names a service's own URL (its own user) in the Secret;
    a service without one uses urlKey."""

    def url_keys(*args: str) -> dict[str, str]:
        external = [
            "--set",
            "rabbitmq.enabled=false",
            "--set",
            "externalRabbitmq.existingSecret=mq",
        ]
        docs = chart.render([*external, *args])
        return {
            c["name"]: e["valueFrom"]["secretKeyRef"]["key"]
            for _, c in workload_containers(docs)
            for e in c["env"]
            if e["name"] == "RMQ_URL"
        }

    assert set(url_keys().values()) == {"url"}
    own = url_keys("--set", "externalRabbitmq.urlKeys.celeryWorker=worker-url")
    assert own == {
        "api": "url",
        "migrate": "url",
        "celery-worker": "worker-url",
        "consumer": "url",
        "celery-beat": "url",
    }


def test_private_nodes_get_the_chart_policies(default_docs: list[Obj]) -> None:
    """``make dev`` and the tests' own broker nodes declare what the chart's defaults
    declare: the same policies with the same definitions."""
    rendered = {p["name"]: p for p in _definitions(default_docs)["policies"]}
    assert set(rendered) == set(TOPOLOGY_POLICIES)
    for name, policy in TOPOLOGY_POLICIES.items():
        got = rendered[name]
        assert {k: got[k] for k in policy} == policy, name
        assert {q for q in queues.ALL_QUEUES if re.fullmatch(got["pattern"], q)} == {
            q for q in queues.ALL_QUEUES if re.fullmatch(policy["pattern"], q)
        }


def _longest_delivery_seconds(env: dict[str, str]) -> float:
    """The longest a worker may hold a message unacknowledged, from the code's limits."""
    settings = load_settings(ConsumerSettings, {**env})
    reports = settings.callback_max_wait  # each status report may be retried this long
    attempts = settings.max_retries + 1
    backoff = sum(
        min(settings.retry_backoff_max, settings.retry_backoff * 2**i)
        for i in range(settings.max_retries)
    )
    # The consumer runs every attempt of a task in one delivery, two reports each.
    consumer = attempts * (MAX_DURATION_SECONDS + 2 * reports) + backoff
    # A Celery delivery is one attempt, cut at TIME_LIMIT, plus its reports.
    celery = celery_app.TIME_LIMIT + 2 * reports
    return float(max(consumer, celery))


@pytest.mark.parametrize("name", [n for n in SET_NAMES if n != "external"])
def test_consumer_timeout_and_grace_periods(rendered: dict[str, list[Obj]], name: str) -> None:
    docs = rendered[name]
    (consumer,) = chart.find(docs, "Deployment", "consumer")
    env = container_env(docs, consumer["spec"]["template"]["spec"]["containers"][0])
    longest = _longest_delivery_seconds(env)
    timeout_ms = int(_rabbitmq_conf(docs)["consumer_timeout"])
    assert timeout_ms > longest * 1000, (timeout_ms, longest)
    # make dev and the tests run their private nodes with the same timeout.
    assert timeout_ms == rabbitmq.CONSUMER_TIMEOUT_MS
    # A stopping worker can finish the longest task it may be running.
    (worker,) = chart.find(docs, "Deployment", "celery-worker")
    assert (
        worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > celery_app.TIME_LIMIT
    )
    assert (
        consumer["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > MAX_DURATION_SECONDS
    )
