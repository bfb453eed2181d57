"""The chart and the code agree: settings, commands, routes, ports, selectors, queues.

Each service's environment, as the chart renders it (Secrets resolved, $(VAR)
references expanded), is loaded into that service's own settings class: a missing,
misspelt or invalid setting fails here, not in a crash-looping pod.
"""

from __future__ import annotations

import base64
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

import pytest
from pydantic_settings import BaseSettings

import celery_app
from tasklab_api import __main__ as api_main
from tasklab_api.config import Settings as ApiSettings
from tasklab_api.main import create_app
from tasklab_common import queues
from tasklab_common.messages import MAX_DURATION_SECONDS
from tasklab_common.settings import WorkerSettings
from tasklab_consumer.settings import ConsumerSettings
from tasklab_devtools import chart
from tasklab_devtools.chart import Obj

SET_NAMES = [s.name for s in chart.value_sets()]

#: The settings class each container's environment must satisfy.
SETTINGS: dict[str, type[BaseSettings]] = {
    "api": ApiSettings,
    "migrate": ApiSettings,
    "celery-worker": celery_app.CeleryWorkerSettings,
    "consumer": ConsumerSettings,
}
#: Variables the chart sets that are not settings: the parts RMQ_URL is composed of,
#: and Python's own.
HELPER_VARS = {"RMQ_USERNAME", "RMQ_PASSWORD", "PYTHONDONTWRITEBYTECODE"}
#: Values of the Secrets that the external value set expects to exist already.
EXTERNAL_SECRETS = {
    ("tasklab-broker", "url"): "amqp://tasklab:secret@mq.example.com:5672/tasklab",
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
    for secret in chart.find(docs, "Secret", name):
        data = secret.get("data", {})
        assert key in data, f"Secret {name} has no key {key}"
        return base64.b64decode(data[key]).decode()
    assert (name, key) in EXTERNAL_SECRETS, (
        f"Secret {name} (key {key}) is neither rendered nor given"
    )
    return EXTERNAL_SECRETS[(name, key)]


def container_env(docs: list[Obj], container: Obj) -> dict[str, str]:
    """A container's environment as the kubelet builds it."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(
                r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), str(item["value"])
            )
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = _secret_value(docs, ref["name"], ref["key"])
    return env


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


def field_names(cls: type[BaseSettings]) -> set[str]:
    return {name.upper() for name in cls.model_fields}


# --------------------------------------------------------------------- settings


@pytest.mark.parametrize("name", SET_NAMES)
def test_each_service_gets_every_setting_it_needs(
    rendered: dict[str, list[Obj]], name: str
) -> None:
    docs = rendered[name]
    seen = set()
    for obj, c in workload_containers(docs):
        cls = SETTINGS[c["name"]]
        seen.add(c["name"])
        env = container_env(docs, c)
        unknown = set(env) - field_names(cls) - HELPER_VARS - {"HEARTBEAT_FILE"}
        assert not unknown, f"{chart.label(obj)}/{c['name']}: not a setting: {unknown}"
        load_settings(cls, env)  # raises on a missing or invalid setting
    assert seen == set(SETTINGS)


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


# --------------------------------------------------------------------- commands, routes


def _console_scripts() -> set[str]:
    return {ep.name for ep in importlib.metadata.entry_points(group="console_scripts")}


def test_commands_and_modules_exist(default_docs: list[Obj]) -> None:
    scripts = _console_scripts()
    commands = {c["name"]: c for _, c in workload_containers(default_docs)}
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
    # The workers call the api's callback route on the api Service.
    callback = [r for r in _api_routes(docs) if r.startswith("/update_task_status")]
    for worker in ("celery-worker", "consumer"):
        url = envs[worker]["API_URL"]
        service, port = _service_target(docs, url)
        assert service["metadata"]["name"] == "api"
        assert urlsplit(url).path in callback
        assert _backing_container_port(docs, service, port) == int(envs["api"]["API_PORT"])
    # Every service reaches the same broker.
    urls = {env["RMQ_URL"] for env in envs.values()}
    assert len(urls) == 1
    if chart.find(docs, "StatefulSet", "rabbitmq"):
        conf = _rabbitmq_conf(docs)
        service, port = _service_target(docs, urls.pop())
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
    (dlx,) = d["exchanges"]
    assert dlx["name"] == queues.DEAD_LETTER_EXCHANGE
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
    # A stopping worker can finish the longest task it may be running.
    (worker,) = chart.find(docs, "Deployment", "celery-worker")
    assert (
        worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > celery_app.TIME_LIMIT
    )
    assert (
        consumer["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > MAX_DURATION_SECONDS
    )
