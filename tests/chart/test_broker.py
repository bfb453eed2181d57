"""The broker as the chart configures it, on a real RabbitMQ node, with the real services.

The subchart's rendered rabbitmq.conf, definitions.json and enabled_plugins, with the
users the setup script writes from the rendered Secrets, are loaded into a private
local node (only its listeners and file paths are its own, see
tasklab_devtools.rabbitmq_conf; fixtures in conftest.py). The api, the Celery worker,
the consumer and the beat then run against it each as its own broker user, the workers
reporting to the api's internal port: a task of each method goes to DONE (with
retries), the helm test pod's script passes, a rejected message is dead-lettered, the
beat as rendered gets its housekeeping run, and every broker and api metric the alerts
and dashboards use exists. What each user may and may not do: test_broker_users.py.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pika
import pytest
from e2eclient import Target

from tasklab_common import queues
from tasklab_devtools import chart
from tasklab_devtools.chart import Obj
from tasklab_devtools.procs import ManagedProcess, wait_http_ok
from tasklab_devtools.rabbitmq_conf import ConfiguredRabbitNode
from tasklab_devtools.stack import LocalStack, StackConfig, venv_command


def test_setup_script_output(
    setup_output: dict[str, Path], broker_logins: dict[str, tuple[str, str]]
) -> None:
    etc, data = setup_output["etc"], setup_output["data"]
    cookie = data / ".erlang.cookie"
    assert cookie.read_text() == (setup_output["secret"] / "erlang-cookie").read_text()
    assert cookie.stat().st_mode & 0o777 == 0o400
    definitions = (etc / "definitions.json").read_text()
    assert "__RABBITMQ" not in definitions and "__USER_" not in definitions
    assert (etc / "definitions.json").stat().st_mode & 0o077 == 0
    users = {u["name"]: u for u in json.loads(definitions)["users"]}
    assert set(users) == {user for user, _ in broker_logins.values()}
    for user, password in broker_logins.values():
        assert password not in definitions  # hashed
        assert users[user]["password_hash"]
    admin_user, admin_password = broker_logins["admin"]
    default_user = (etc / "conf.d" / "20-default-user.conf").read_text()
    assert f"default_user = {admin_user}" in default_user
    assert f"default_pass = {admin_password}" in default_user


@pytest.mark.parametrize(
    ("name", "problem"),
    [("bad user", "use letters, digits and . _ ~ - only"), ("tasklab", "is used twice")],
)
def test_setup_script_refuses_bad_user_names(
    default_docs: list[Obj], tmp_path: Path, name: str, problem: str
) -> None:
    """A user name from an existing Secret goes into JSON and URLs: the setup script
    refuses one it cannot put there safely, or one given twice (the administrator's)."""
    (sts,) = chart.find(default_docs, "StatefulSet", "rabbitmq")
    (setup,) = sts["spec"]["template"]["spec"]["initContainers"]
    (config,) = chart.find(default_docs, "ConfigMap", "rabbitmq-config")
    dirs = {n: tmp_path / n for n in ("config", "secret", "etc", "data")}
    for path in dirs.values():
        path.mkdir()
    for key, text in config["data"].items():
        (dirs["config"] / key).write_text(text)
    env = {
        **os.environ,
        **{f"{n.upper()}_DIR": str(path) for n, path in dirs.items()},
        **chart.container_env(default_docs, setup),
        "USER_CONSUMER_NAME": name,
    }
    done = subprocess.run(
        ["bash", "-ec", setup["command"][2]],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert problem in done.stderr and "(CONSUMER)" in done.stderr, done.stderr
    assert not (dirs["etc"] / "definitions.json").exists()


def _list(node: ConfiguredRabbitNode, *args: str) -> list[dict[str, Any]]:
    out = node.rabbitmqctl(*args, "--quiet", "--formatter", "json")
    rows: list[dict[str, Any]] = json.loads(out)
    return rows


def test_the_node_runs_the_rendered_configuration(
    node: ConfiguredRabbitNode, default_docs: list[Obj], broker_logins: dict[str, tuple[str, str]]
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
    # The definitions created the users (no guest), with the passwords hashed by the
    # setup script, their tags and their permissions on "/".
    assert not node.reconciled
    definitions = json.loads(config["data"]["definitions.json"])
    services = {k: user for k, (user, _) in broker_logins.items() if k != "admin"}
    tags = {str(u["user"]): sorted(u["tags"]) for u in _list(node, "list_users")}
    assert tags == {
        node.user: ["administrator"],
        services["api"]: ["monitoring"],
        services["keda"]: ["monitoring"],
        # No management API at all for the others.
        **{services[k]: [] for k in ("celery-worker", "consumer", "celery-beat")},
    }
    granted = {str(p["user"]): p for p in _list(node, "list_permissions", "-p", "/")}
    assert set(granted) == {node.user, *services.values()}
    for key, user in services.items():
        placeholder = f"__USER_{key.upper().replace('-', '_')}_NAME__"
        (wanted,) = [p for p in definitions["permissions"] if p["user"] == placeholder]
        for kind in ("configure", "write", "read"):
            assert granted[user][kind] == wanted[kind], (key, kind)


def test_a_task_of_each_method_is_done_with_retries(stack: StackConfig) -> None:
    """Every service as its own user: the api publishes (and declares the queues), the
    worker consumes, acknowledges and publishes its retry, the consumer consumes and
    retries in place, both report to the api's internal port."""
    target = Target(stack.api_base_url, stack.callback_secret)
    sync = target.submit_ok(method="sync", duration=0)
    assert sync["status"] == "DONE", sync
    submitted = [
        (target.submit_ok(method=method, duration=0.2, fail_times=fail_times), fail_times)
        for method in ("celery", "rabbitmq")
        for fail_times in (0, 1)
    ]
    for task, fail_times in submitted:
        done = target.wait_status(task["id"], timeout=60)
        assert done["status"] == "DONE", done
        assert done["attempts"] == fail_times + 1, done


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
    params = pika.URLParameters(stack.rmq_urls["api"])  # as the api publishes
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
    """The beat with the chart's command and environment (its own broker user on this
    node, the schedule file in a temporary directory, a 1 s interval) sends the
    housekeeping task through the rendered broker configuration; the stack's worker
    runs it and asks the api's internal port, and the api counts the run."""
    (beat,) = chart.find(default_docs, "Deployment", "celery-beat")
    container = beat["spec"]["template"]["spec"]["containers"][0]
    schedule = "/tmp/celerybeat-schedule"
    command = chart.service_command(container)
    assert f"--schedule={schedule}" in command
    argv = [venv_command("celery")] + [
        a.replace(schedule, str(tmp_path / "celerybeat-schedule")) for a in command[1:]
    ]
    assert argv[1:5] == ["-A", "celery_app", "beat", "--loglevel=info"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env |= {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "RMQ_URL": stack.rmq_urls["celery-beat"],
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
