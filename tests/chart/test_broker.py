"""The broker as the chart configures it, on a real RabbitMQ node, with the real services.

The subchart's rendered rabbitmq.conf, definitions.json and enabled_plugins are loaded
into a private local node (only its listeners, user and file paths are its own, see
tasklab_devtools.rabbitmq_conf); the api, the Celery worker and the consumer then run
against it and take a task of each method to DONE, the helm test pod's script passes
against them, the Celery beat as the chart runs it gets its housekeeping task run, and
every broker and api metric the alerts and dashboards use exists.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pika
import pytest

from tasklab_common import queues
from tasklab_devtools import chart
from tasklab_devtools.chart import Obj
from tasklab_devtools.procs import ManagedProcess, wait_http_ok
from tasklab_devtools.rabbitmq import ensure_rabbitmq_server
from tasklab_devtools.rabbitmq_conf import ConfiguredRabbitNode
from tasklab_devtools.stack import LocalStack, StackConfig, venv_command
from tasklab_devtools.testing.stacks import stack_config


@pytest.fixture(scope="module")
def setup_output(
    default_docs: list[Obj], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Runs the broker pod's setup script (its init container) on the rendered files.

    It writes the node's configuration, its definitions with the user's password hash,
    and the Erlang cookie; here into temporary directories, for a known user.
    """
    base = tmp_path_factory.mktemp("setup")
    dirs = {name: base / name for name in ("config", "secret", "etc", "data")}
    for path in dirs.values():
        path.mkdir()
    (config,) = chart.find(default_docs, "ConfigMap", "rabbitmq-config")
    for key, text in config["data"].items():
        (dirs["config"] / key).write_text(text)
    (dirs["secret"] / "erlang-cookie").write_text("COOKIE" * 8)
    (sts,) = chart.find(default_docs, "StatefulSet", "rabbitmq")
    (setup,) = sts["spec"]["template"]["spec"]["initContainers"]
    assert setup["command"][:2] == ["bash", "-ec"]
    env = {
        **os.environ,
        **{f"{name.upper()}_DIR": str(path) for name, path in dirs.items()},
        "RABBITMQ_USERNAME": "tasklab",
        "RABBITMQ_PASSWORD": PASSWORD,
    }
    subprocess.run(["bash", "-ec", setup["command"][2]], env=env, check=True, timeout=30)
    return dirs


#: The password the node's user gets (URL-safe, as the chart generates them).
PASSWORD = secrets.token_hex(16)


def test_setup_script_output(setup_output: dict[str, Path]) -> None:
    etc, data = setup_output["etc"], setup_output["data"]
    cookie = data / ".erlang.cookie"
    assert cookie.read_text() == "COOKIE" * 8
    assert cookie.stat().st_mode & 0o777 == 0o400
    definitions = (etc / "definitions.json").read_text()
    assert "__RABBITMQ" not in definitions
    assert (etc / "definitions.json").stat().st_mode & 0o077 == 0
    assert f"default_pass = {PASSWORD}" in (etc / "conf.d" / "20-default-user.conf").read_text()


@pytest.fixture(scope="module")
def node(
    setup_output: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConfiguredRabbitNode]:
    ensure_rabbitmq_server()
    etc = setup_output["etc"]
    conf_d = sorted((etc / "conf.d").glob("*.conf"))
    broker = ConfiguredRabbitNode.allocate_configured(
        "tasklab-chart",
        tmp_path_factory.mktemp("rabbitmq"),
        conf="\n".join(p.read_text() for p in conf_d),
        definitions=(etc / "definitions.json").read_text(),
        enabled_plugins=(etc / "enabled_plugins").read_text(),
    )
    # The user and password the setup script put into the definitions.
    broker.user, broker.password = "tasklab", PASSWORD
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def local_stack(
    node: ConfiguredRabbitNode, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    local = LocalStack(stack_config(node, tmp_path_factory.mktemp("stack"), "logs-chart"))
    local.start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="module")
def stack(local_stack: LocalStack) -> StackConfig:
    return local_stack.cfg


def _list(node: ConfiguredRabbitNode, *args: str) -> list[dict[str, object]]:
    out = node.rabbitmqctl(*args, "--quiet", "--formatter", "json")
    rows: list[dict[str, object]] = json.loads(out)
    return rows


def test_the_node_runs_the_rendered_configuration(
    node: ConfiguredRabbitNode, default_docs: list[Obj]
) -> None:
    (config,) = chart.find(default_docs, "ConfigMap", "rabbitmq-config")
    conf = config["data"]["rabbitmq.conf"]
    timeout = re.search(r"^consumer_timeout = (\d+)$", conf, re.M)
    assert timeout
    assert node.rabbitmqctl("eval", "application:get_env(rabbit, consumer_timeout).").strip() == (
        f"{{ok,{timeout.group(1)}}}"
    )
    assert "{absolute," in node.rabbitmqctl(
        "eval", "vm_memory_monitor:get_vm_memory_high_watermark()."
    )
    rows = _list(node, "list_queues", "name", "durable", "arguments", "policy")
    by_name = {str(r["name"]): r for r in rows}
    assert set(by_name) == set(queues.ALL_QUEUES)
    policies = {str(p["name"]): p for p in _list(node, "list_policies")}
    raw = policies["tasklab-work-queues"]["definition"]
    work = json.loads(raw) if isinstance(raw, str) else raw
    assert isinstance(work, dict)
    assert work["overflow"] == "reject-publish"
    assert work["dead-letter-exchange"] == queues.DEAD_LETTER_EXCHANGE
    for name in (queues.CELERY_QUEUE, queues.DIRECT_QUEUE):
        row = by_name[name]
        assert row["durable"] is True
        assert row["arguments"] in ([], {})
        assert row["policy"] == "tasklab-work-queues"
    assert by_name[queues.DEAD_LETTER_QUEUE]["policy"] == "tasklab-dead-letters"
    exchanges = {
        str(r["name"]): r for r in _list(node, "list_exchanges", "name", "type", "durable")
    }
    assert exchanges[queues.DEAD_LETTER_EXCHANGE]["type"] == "fanout"
    assert exchanges[queues.CANCEL_EXCHANGE]["type"] == "fanout"
    users = _list(node, "list_users")
    assert [u["user"] for u in users] == [node.user]  # no guest
    # The definitions created the user, with the password hashed by the setup script.
    assert not node.reconciled


def test_a_task_of_each_method_is_done(stack: StackConfig) -> None:
    with httpx.Client(base_url=stack.api_base_url, timeout=30) as http:
        sync = http.post("/api/tasks", json={"method": "sync", "duration": 0})
        assert sync.status_code == 200, sync.text
        assert sync.json()["status"] == "DONE"
        ids = []
        for method in ("celery", "rabbitmq"):
            resp = http.post("/api/tasks", json={"method": method, "duration": 0.2})
            assert resp.status_code == 202, resp.text
            ids.append(resp.json()["id"])
        deadline = time.monotonic() + 30
        for task_id in ids:
            while (task := http.get(f"/api/tasks/{task_id}").json())["status"] != "DONE":
                assert task["status"] in ("PENDING", "IN_PROGRESS"), task
                assert time.monotonic() < deadline, task
                time.sleep(0.1)


def test_the_helm_test_pod_script_passes(stack: StackConfig, default_docs: list[Obj]) -> None:
    (pod,) = chart.find(default_docs, "Pod", "tasklab-test-submit")
    container = pod["spec"]["containers"][0]
    assert container["command"][:2] == ["python", "-c"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["API"] == "http://api.tasklab.svc:8080"
    done = subprocess.run(
        [sys.executable, "-c", container["command"][2]],
        env={**os.environ, **env, "API": stack.api_base_url, "TIMEOUT": "60"},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(": DONE by ") == 3, done.stdout


def test_a_rejected_message_is_dead_lettered(
    node: ConfiguredRabbitNode, stack: StackConfig
) -> None:
    """The consumer rejects a malformed message for good; the policy dead-letters it."""
    before = node.queue_counts(queues.DEAD_LETTER_QUEUE)[0]
    params = pika.URLParameters(stack.rmq_url)
    with pika.BlockingConnection(params) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            "", queues.DIRECT_QUEUE, b"not a task", pika.BasicProperties(delivery_mode=2)
        )
    node.wait_queue_counts(queues.DEAD_LETTER_QUEUE, before + 1, 0, timeout=30)


def _housekeeping_runs(stack: StackConfig) -> float:
    text = httpx.get(f"{stack.api_base_url}/metrics", timeout=10).text
    match = re.search(r"^tasklab_housekeeping_runs_total ([0-9.e+]+)$", text, re.M)
    assert match, "the api exports no tasklab_housekeeping_runs_total"
    return float(match.group(1))


def test_the_beat_gets_housekeeping_run(
    stack: StackConfig, default_docs: list[Obj], tmp_path: Path
) -> None:
    """The beat with the chart's command and environment (this node's broker URL, the
    schedule file in a temporary directory, a 1 s interval) sends the housekeeping
    task through the rendered broker configuration; the stack's worker runs it, and
    the api counts the run."""
    (beat,) = chart.find(default_docs, "Deployment", "celery-beat")
    container = beat["spec"]["template"]["spec"]["containers"][0]
    schedule = "/tmp/celerybeat-schedule"
    assert f"--schedule={schedule}" in container["command"]
    argv = [venv_command("celery")] + [
        a.replace(schedule, str(tmp_path / "celerybeat-schedule")) for a in container["command"][1:]
    ]
    assert argv[1:5] == ["-A", "celery_app", "beat", "--loglevel=info"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env |= {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "RMQ_URL": stack.rmq_url,
        "HOUSEKEEPING_INTERVAL": "1",
    }
    before = _housekeeping_runs(stack)
    process = ManagedProcess("chart-beat", argv, env, cwd=tmp_path, log_path=tmp_path / "beat.log")
    process.start()
    try:
        deadline = time.monotonic() + 60
        while _housekeeping_runs(stack) <= before:
            log = (tmp_path / "beat.log").read_text()
            assert process.running(), log
            assert time.monotonic() < deadline, log
            time.sleep(0.5)
    finally:
        process.terminate(timeout=15)
    assert (
        "Sending due task housekeeping (tasklab.housekeeping)"
        in (tmp_path / "beat.log").read_text()
    )


def _panel_exprs(panels: list[dict[str, Any]]) -> list[str]:
    """Every query of a dashboard's panels, rows' panels included."""
    exprs = []
    for panel in panels:
        exprs += [str(t["expr"]) for t in panel.get("targets", []) if "expr" in t]
        exprs += _panel_exprs(panel.get("panels", []))
    return exprs


def _metric_names(text: str, prefix: str) -> set[str]:
    return set(re.findall(rf"\b({prefix}\w+)", text))


def test_alerts_and_dashboards_use_real_metrics(
    node: ConfiguredRabbitNode, stack: StackConfig, default_docs: list[Obj]
) -> None:
    (rule,) = chart.find(default_docs, "PrometheusRule")
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    for config_map in chart.find(default_docs, "ConfigMap"):
        if config_map["metadata"].get("labels", {}).get("grafana_dashboard") == "1":
            for text in config_map["data"].values():
                exprs += _panel_exprs(json.loads(text)["panels"])
    used = _metric_names("\n".join(exprs), "rabbitmq_") | _metric_names(
        "\n".join(exprs), "tasklab_"
    )
    assert used
    # What Prometheus scrapes: the ServiceMonitors' endpoints, on the node and the api.
    (monitor,) = chart.find(default_docs, "ServiceMonitor", "rabbitmq")
    exported = set()
    for endpoint in monitor["spec"]["endpoints"]:
        params = endpoint.get("params", {})
        url = node.prometheus_url.rstrip("/") + endpoint["path"]
        text = httpx.get(url, params=params, timeout=10).text
        exported |= _metric_names(text, "rabbitmq_")
    api_text = httpx.get(f"{stack.api_base_url}/metrics", timeout=10).text
    exported |= {
        re.sub(r"_(bucket|count|sum|created)$", "", n) for n in _metric_names(api_text, "tasklab_")
    } | _metric_names(api_text, "tasklab_")
    assert used <= exported, sorted(used - exported)


def _run_test_pod_script(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **env, "TIMEOUT": "60"},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_the_helm_test_pod_script_passes_with_authentication(
    local_stack: LocalStack, rendered: dict[str, list[Obj]]
) -> None:
    """The external value set turns api.auth on: its test pod gets the api's credentials
    from the same Secret, checks that a request without them is refused, and uses the
    first API key (or the Basic login, when the Secret has only that). Runs last: it
    restarts the api, which resets the api's metrics."""
    (pod,) = chart.find(rendered["external"], "Pod", "tasklab-test-submit")
    container = pod["spec"]["containers"][0]
    secret = {  # the Secret the operator created (api.auth.existingSecret)
        "api-keys": f"{secrets.token_urlsafe(24)}, {secrets.token_urlsafe(24)}",
        "basic-user": "operator",
        "basic-password": secrets.token_urlsafe(18),
    }
    credentials = {
        e["name"]: secret[e["valueFrom"]["secretKeyRef"]["key"]]
        for e in container["env"]
        if e["name"] in ("API_KEYS", "AUTH_BASIC_USER", "AUTH_BASIC_PASSWORD")
    }
    assert len(credentials) == 3
    cfg = local_stack.cfg
    api = local_stack.processes["api"]
    plain = dict(api.env)

    def restart_api(env: dict[str, str]) -> None:
        api.terminate()
        api.env = env
        api.start()
        wait_http_ok(f"{cfg.api_base_url}/readyz", 60, process=api)

    base = {"API": cfg.api_base_url, "PYTHONDONTWRITEBYTECODE": "1"}
    restart_api({**plain, **credentials})
    try:
        basic_only = {k: v for k, v in credentials.items() if k != "API_KEYS"}
        for env in (credentials, basic_only):
            done = _run_test_pod_script(container["command"][2], {**base, **env})
            assert done.returncode == 0, done.stdout + done.stderr
            assert "authentication: on (a request without credentials got 401)" in done.stdout
            assert done.stdout.count(": DONE by ") == 3, done.stdout
    finally:
        restart_api(plain)
    # Credentials given, but the api does not ask for them: the script says so.
    done = _run_test_pod_script(container["command"][2], {**base, **credentials})
    assert done.returncode == 1
    assert "a request without it got 200" in done.stderr
