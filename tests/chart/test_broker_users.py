"""Each service's broker user, on the real node: it can do what its service does, and
nothing it must not.

The users and permissions are the rendered chart's (conftest.py runs the broker pod's
setup script on them). First what the services do besides the task flow of
test_broker.py: the api revokes a cancelled Celery task, a cancelled rabbitmq task
stops on its consumer through the cancel exchange, and the api reads queue figures
and consumer names from the management API; in the worker's environment the guide's
`celery inspect` and `purge` and a guide-style `.delay().get()` work; after all of it
the broker's log shows no refusal of any service's user. Then what each user must not
do, done for real: consume or purge another service's queue, declare other queues,
publish where its service never does (the consumer and the beat cannot reach
direct_tasks or any queue through the default exchange; only the api sends cancel
notices, only the consumer reads them, and a queue the broker names for the consumer
taps no other exchange, nor can another connection read it), use the management API
(only the api's and KEDA's monitoring users may read it, and change nothing); KEDA's
user may do nothing at all over AMQP.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pika
import pika.exceptions
import pytest
from e2eclient import Target
from pika.adapters.blocking_connection import BlockingChannel
from pika.exchange_type import ExchangeType

from tasklab_common import queues
from tasklab_common.messages import CancelNotice
from tasklab_devtools import chart
from tasklab_devtools.chart import Obj
from tasklab_devtools.rabbitmq_conf import ConfiguredRabbitNode
from tasklab_devtools.stack import LocalStack, StackConfig, venv_command


def test_a_cancel_revokes_the_running_celery_task(
    local_stack: LocalStack, stack: StackConfig
) -> None:
    """The api broadcasts Celery's revoke (its user may publish to celery.pidbox) and the
    worker, reading its mailbox queue, stops the task."""
    target = Target(stack.api_base_url, stack.callback_secret)
    task = target.submit_ok(method="celery", duration=60)
    target.wait_status(task["id"], {"IN_PROGRESS"})
    assert target.http.post(f"/api/tasks/{task['id']}/cancel").status_code == 200
    assert target.wait_status(task["id"])["status"] == "CANCELLED"
    worker_log = local_stack.processes["celery-worker"].log_path
    api_log = local_stack.processes["api"].log_path
    assert worker_log is not None and api_log is not None
    deadline = time.monotonic() + 30
    while f"Terminating {task['id']}" not in worker_log.read_text():
        assert time.monotonic() < deadline, worker_log.read_text()[-3000:]
        time.sleep(0.2)
    assert "could not revoke" not in api_log.read_text()


def test_a_cancel_stops_the_running_rabbitmq_task(
    local_stack: LocalStack, stack: StackConfig, node: ConfiguredRabbitNode
) -> None:
    """The api publishes a cancel notice to the cancel exchange (its user may configure
    and write it); the consumer reads it through a queue the broker names for it
    (configure and read on the exchange; configure, write and read on amq.gen-...),
    stops the task's work and settles its message at once, not after its minute."""
    target = Target(stack.api_base_url, stack.callback_secret)
    task = target.submit_ok(method="rabbitmq", duration=60)
    target.wait_status(task["id"], {"IN_PROGRESS"})
    node.wait_queue_counts(queues.DIRECT_QUEUE, ready=0, unacked=1)
    resp = target.http.post(f"/api/tasks/{task['id']}/cancel")
    assert resp.status_code == 200 and resp.json()["status"] == "CANCELLED", resp.text
    node.wait_queue_counts(queues.DIRECT_QUEUE, ready=0, unacked=0, timeout=15)
    log = local_stack.processes["consumer"].log_text()
    assert f"Task {task['num']} cancelled" in log, log[-3000:]
    assert f"Task {task['num']} finished" not in log, log[-3000:]


def test_the_api_reads_the_queue_figures_and_who_consumes(stack: StackConfig) -> None:
    """Its user's monitoring tag: the queues' figures and every consumer's connection
    name (other users' connections), read from the management API."""
    deadline = time.monotonic() + 30
    while True:
        overview = httpx.get(f"{stack.api_base_url}/api/overview", timeout=10).json()
        online = {w["name"].split("@")[0] for w in overview["workers"] if w["online"]}
        if overview["queues"] and online >= {"celery", "consumer"}:
            break
        assert time.monotonic() < deadline, overview
        time.sleep(0.5)
    assert overview["broker_stats_error"] is None
    consumers = {q["name"]: q["consumers"] for q in overview["queues"]}
    assert consumers[queues.CELERY_QUEUE] >= 1 and consumers[queues.DIRECT_QUEUE] >= 1


def _worker_env(default_docs: list[Obj], stack: StackConfig, tmp_path: Path) -> dict[str, str]:
    """The worker container's environment, on this node, in a folder without .env."""
    (worker,) = chart.find(default_docs, "Deployment", "celery-worker")
    env = chart.container_env(default_docs, worker["spec"]["template"]["spec"]["containers"][0])
    return {
        **env,
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "RMQ_URL": stack.rmq_urls["celery-worker"],
        "API_URL": stack.api_callback_url,
        "CALLBACK_SECRET": stack.callback_secret,
    }


def _run_as_worker(
    argv: list[str], docs: list[Obj], stack: StackConfig, cwd: Path
) -> subprocess.CompletedProcess[str]:
    """``argv`` with the worker pod's environment (its own broker user); it must succeed."""
    done = subprocess.run(
        argv,
        env=_worker_env(docs, stack, cwd),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.mark.parametrize(
    ("command", "expect"),
    [
        (["inspect", "ping"], r"celery@\S+: OK"),
        (["inspect", "registered"], r"process_task"),
        (["inspect", "active"], r"celery@"),
        (["inspect", "stats"], r'"pool"'),
        (["purge", "-f"], r"No messages purged|Purged \d+ message"),
    ],
)
def test_the_guides_celery_commands_run_as_the_worker_user(
    stack: StackConfig,
    default_docs: list[Obj],
    tmp_path: Path,
    command: list[str],
    expect: str,
) -> None:
    """`kubectl exec deploy/celery-worker -- celery -A celery_app ...` as README says:
    the remote control's broadcast and reply queues, and a purge of queue celery, with
    the worker's own broker user."""
    done = _run_as_worker(
        [venv_command("celery"), "-A", "celery_app", *command], default_docs, stack, tmp_path
    )
    assert re.search(expect, done.stdout), done.stdout + done.stderr


def test_a_guide_style_call_in_the_worker_pod_gets_its_result(
    stack: StackConfig, default_docs: list[Obj], tmp_path: Path
) -> None:
    """`process_task.delay(...).get()` over rpc://: a reply queue of its own, the result
    published to it through the default exchange by the worker, both as the worker's
    user."""
    call = (
        "from celery_tasks import process_task; "
        "print(process_task.delay(7, 0.2, 'celery').get(timeout=60))"
    )
    done = _run_as_worker([sys.executable, "-c", call], default_docs, stack, tmp_path)
    assert "'status': 'success', 'task_num': 7" in done.stdout, done.stdout


def test_no_service_was_refused_anything(
    node: ConfiguredRabbitNode, broker_logins: dict[str, tuple[str, str]]
) -> None:
    """After all of the above, the broker refused none of the services' users anything:
    each has every permission its work needs (a refusal closes a channel, which a
    client may silently reopen, so the broker's own log is read)."""
    log = node.log_text()
    assert "authenticated and granted access" in log  # the log the services used
    for key in chart.BROKER_CLIENTS:
        user = broker_logins[key][0]
        refused = [
            line
            for line in log.splitlines()
            if f"user '{user}'" in line and re.search(r"access_refused|ACCESS_REFUSED", line)
        ]
        assert not refused, (key, refused[:5])


# --------------------------------------------------------------------- what they must not do

Action = Callable[[BlockingChannel], object]
#: Reply code of a refused operation (ACCESS_REFUSED).
REFUSED = 403
VHOST = quote("/", safe="")


def _declare(queue: str) -> Action:
    return lambda ch: ch.queue_declare(queue, durable=True)


def _get(queue: str) -> Action:
    return lambda ch: ch.basic_get(queue, auto_ack=False)


def _purge(queue: str) -> Action:
    return lambda ch: ch.queue_purge(queue)


def _publish(exchange: str, routing_key: str = "no-such-queue") -> Action:
    """A publish that reaches no queue when allowed (nothing is delivered to anyone)."""
    return lambda ch: ch.basic_publish(exchange, routing_key, b"not a task")


def _notice() -> Action:
    """A cancel notice of a task no one runs (every consumer reads it, and ignores it)."""
    body = CancelNotice(task_id="no-such-task").model_dump_json().encode()
    return lambda ch: ch.basic_publish(CANCEL, "", body)


def _declare_cancel_exchange(ch: BlockingChannel) -> None:
    ch.exchange_declare(CANCEL, ExchangeType.fanout, durable=True)


def _tap(exchange: str, *, declare: bool = False) -> Action:
    """What the consumer does to read the cancel notices, on ``exchange``: (declare the
    cancel exchange,) declare a queue the broker names, bind it, consume it."""

    def tap(ch: BlockingChannel) -> object:
        if declare:
            _declare_cancel_exchange(ch)
        queue = ch.queue_declare("", exclusive=True, auto_delete=True).method.queue
        ch.queue_bind(queue, exchange)
        return ch.basic_consume(queue, lambda *_: None, auto_ack=True)

    return tap


def _attempt(url: str, action: Action) -> int | None:
    """``action`` on a fresh channel (publisher confirms on) of a connection as the URL's
    user: None when the broker allowed it, else the code it closed the channel with."""
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        try:
            action(channel)
        except pika.exceptions.ChannelClosedByBroker as exc:
            return int(exc.reply_code)
    return None


DIRECT, CELERY, DEAD = queues.DIRECT_QUEUE, queues.CELERY_QUEUE, queues.DEAD_LETTER_QUEUE
DLX, CANCEL = queues.DEAD_LETTER_EXCHANGE, queues.CANCEL_EXCHANGE

# (service, what, operation, allowed): each service's own operations are allowed, the
# rest refused. Allowed publishes route nowhere; allowed gets find empty queues or hand
# the message back when the channel closes.
AMQP_CASES: list[tuple[str, str, Action, bool]] = [
    ("api", "declare its queue celery", _declare(CELERY), True),
    ("api", "declare its queue direct_tasks", _declare(DIRECT), True),
    ("api", "publish through the default exchange", _publish(""), True),
    ("api", "declare another queue", _declare("tasklab-evil"), False),
    ("api", "consume celery", _get(CELERY), False),
    ("api", "consume direct_tasks", _get(DIRECT), False),
    ("api", "purge the dead letters", _purge(DEAD), False),
    ("api", "publish to the dead-letter exchange", _publish(DLX), False),
    ("api", "declare the cancel exchange", _declare_cancel_exchange, True),
    ("api", "send a cancel notice", _notice(), True),
    ("api", "read the cancel notices", _tap(CANCEL), False),
    ("celery-worker", "consume celery", _get(CELERY), True),
    ("celery-worker", "publish to exchange celery", _publish(CELERY), True),
    ("celery-worker", "consume direct_tasks", _get(DIRECT), False),
    ("celery-worker", "purge direct_tasks", _purge(DIRECT), False),
    ("celery-worker", "consume the dead letters", _get(DEAD), False),
    ("celery-worker", "declare direct_tasks", _declare(DIRECT), False),
    ("celery-worker", "declare another queue", _declare("tasklab-evil"), False),
    ("celery-worker", "publish to the dead-letter exchange", _publish(DLX), False),
    ("celery-worker", "send a cancel notice", _notice(), False),
    ("celery-worker", "read the cancel notices", _tap(CANCEL), False),
    ("consumer", "declare its queue direct_tasks", _declare(DIRECT), True),
    ("consumer", "consume direct_tasks", _get(DIRECT), True),
    ("consumer", "publish through the default exchange", _publish(""), False),
    ("consumer", "publish into direct_tasks", _publish("", DIRECT), False),
    ("consumer", "publish to exchange celery", _publish(CELERY), False),
    ("consumer", "consume celery", _get(CELERY), False),
    ("consumer", "declare celery", _declare(CELERY), False),
    ("consumer", "purge the dead letters", _purge(DEAD), False),
    ("consumer", "read the cancel notices", _tap(CANCEL, declare=True), True),
    ("consumer", "send a cancel notice", _notice(), False),
    ("consumer", "tap exchange celery with a queue of its own", _tap(CELERY), False),
    ("consumer", "tap the dead-letter exchange", _tap(DLX), False),
    ("consumer", "declare another queue", _declare("tasklab-evil"), False),
    ("celery-beat", "declare celery", _declare(CELERY), True),
    ("celery-beat", "publish to exchange celery", _publish(CELERY), True),
    ("celery-beat", "publish through the default exchange", _publish(""), False),
    ("celery-beat", "publish into direct_tasks", _publish("", DIRECT), False),
    ("celery-beat", "consume direct_tasks", _get(DIRECT), False),
    ("celery-beat", "declare direct_tasks", _declare(DIRECT), False),
    ("celery-beat", "purge the dead letters", _purge(DEAD), False),
    ("celery-beat", "send a cancel notice", _notice(), False),
    ("celery-beat", "read the cancel notices", _tap(CANCEL), False),
    ("keda", "publish through the default exchange", _publish(""), False),
    ("keda", "publish to exchange celery", _publish(CELERY), False),
    ("keda", "consume celery", _get(CELERY), False),
    ("keda", "declare celery", _declare(CELERY), False),
    ("keda", "read the cancel notices", _tap(CANCEL), False),
]


@pytest.mark.parametrize(
    ("service", "operation", "allowed"),
    [(s, a, ok) for s, _, a, ok in AMQP_CASES],
    ids=[f"{s}: {what}" for s, what, _, _ in AMQP_CASES],
)
def test_each_user_may_do_its_own_operations_only(
    stack: StackConfig,
    node: ConfiguredRabbitNode,
    broker_logins: dict[str, tuple[str, str]],
    service: str,
    operation: Action,
    allowed: bool,
) -> None:
    if service == "keda":  # (it has no service URL: KEDA logs in to the management API)
        user, password = broker_logins["keda"]
        url = f"amqp://{user}:{password}@127.0.0.1:{node.amqp_port}/"
    else:
        url = stack.rmq_urls[service]
    assert _attempt(url, operation) == (None if allowed else REFUSED)


def test_a_consumers_queue_of_notices_is_its_own(
    node: ConfiguredRabbitNode, broker_logins: dict[str, tuple[str, str]], stack: StackConfig
) -> None:
    """The consumer's user may read any queue the broker names (amq.gen-...), but the
    running consumer's queue of cancel notices is exclusive to its connection: another
    connection, with the same user, can neither read nor delete it (RESOURCE_LOCKED)."""
    listed = _management(node, broker_logins["admin"], "GET", f"api/queues/{VHOST}").json()
    (notices,) = [
        q["name"]
        for q in listed
        if q["name"].startswith("amq.gen-") and q.get("exclusive") and q.get("consumers")
    ]
    locked = 405
    assert _attempt(stack.rmq_urls["consumer"], _get(notices)) == locked
    assert _attempt(stack.rmq_urls["consumer"], lambda ch: ch.queue_delete(notices)) == locked


def _management(
    node: ConfiguredRabbitNode, login: tuple[str, str], method: str, path: str
) -> httpx.Response:
    return httpx.request(method, node.management_url + path, auth=login, timeout=10)


def test_only_the_api_and_keda_read_the_management_api(
    node: ConfiguredRabbitNode, broker_logins: dict[str, tuple[str, str]], stack: StackConfig
) -> None:
    """The workers' and the beat's users have no management tag: a compromised worker
    pod cannot list, purge or delete anything, nor read the other users' connections."""
    for key in ("celery-worker", "consumer", "celery-beat"):
        resp = _management(node, broker_logins[key], "GET", "api/overview")
        assert resp.status_code == 401, (key, resp.text)
    for key in ("api", "keda"):
        deadline = time.monotonic() + 30  # (the figures come with the first statistics)
        while True:
            queue = _management(node, broker_logins[key], "GET", f"api/queues/{VHOST}/{CELERY}")
            assert queue.status_code == 200, (key, queue.text)
            if {"messages_ready", "messages_unacknowledged"} <= set(queue.json()):
                break
            assert time.monotonic() < deadline, (key, queue.json())
            time.sleep(0.5)
    connections = _management(node, broker_logins["api"], "GET", f"api/vhosts/{VHOST}/connections")
    assert connections.status_code == 200, connections.text
    users = {c["user"] for c in connections.json()}
    assert broker_logins["celery-worker"][0] in users  # another user's connection
    assert _management(node, broker_logins["admin"], "GET", "api/users").status_code == 200


@pytest.mark.parametrize("key", ["api", "keda"])
def test_the_monitoring_users_change_nothing(
    node: ConfiguredRabbitNode,
    broker_logins: dict[str, tuple[str, str]],
    stack: StackConfig,
    key: str,
) -> None:
    """Reading is all the monitoring tag adds: no users, no definitions, no purge, no
    queue or policy of their own, no closing another user's connection. (Deleting a
    queue needs the configure permission, as declaring it does: the api's user, which
    declares the work queues, could delete them; RabbitMQ has no permission of its own
    for that. README, Security.)"""
    login = broker_logins[key]
    worker_connection = next(
        c["name"]
        for c in _management(node, broker_logins["admin"], "GET", "api/connections").json()
        if c["user"] == broker_logins["celery-worker"][0]
    )
    attempts: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "api/users", None),
        ("GET", "api/definitions", None),
        ("PUT", "api/users/tasklab-evil", {"password": "x" * 20, "tags": "administrator"}),
        ("DELETE", f"api/queues/{VHOST}/{CELERY}/contents", None),
        ("PUT", f"api/queues/{VHOST}/tasklab-evil", {"durable": True}),
        ("PUT", f"api/policies/{VHOST}/tasklab-evil", {"pattern": ".*", "definition": {}}),
        ("DELETE", f"api/connections/{quote(worker_connection, safe='')}", None),
    ]
    for method, path, body in attempts:
        resp = httpx.request(method, node.management_url + path, auth=login, json=body, timeout=10)
        assert resp.status_code in (401, 403), (key, method, path, resp.status_code, resp.text)
    names = {
        q["name"] for q in _management(node, broker_logins["admin"], "GET", "api/queues").json()
    }
    assert "tasklab-evil" not in names and {CELERY, DIRECT} <= names
