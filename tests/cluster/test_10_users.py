"""What the README tells users to do on their cluster, done on the real one."""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from e2eclient import Target

from tasklab_devtools.cluster.handle import NAMESPACE, Cluster
from tasklab_devtools.kube import Release


def _ready_workers(release: Release) -> list[str]:
    return release.pod_names("celery-worker")


def test_kubectl_scale_spreads_tasks_and_scaling_back_loses_none(
    installed: Cluster, release: Release, target: Target
) -> None:
    installed.kubectl("-n", NAMESPACE, "scale", "deployment", "celery-worker", "--replicas=3")
    installed.wait_for("three Ready worker pods", lambda: len(_ready_workers(release)) == 3)
    pods = _ready_workers(release)
    # Three pods, three processes each: nine tasks of 3 s fill every slot at once.
    tasks = [target.submit_ok(method="celery", duration=3) for _ in range(9)]
    done = [target.wait_status(t["id"], timeout=120) for t in tasks]
    assert [t["status"] for t in done] == ["DONE"] * 9, done
    assert {t["worker"] for t in done} == {f"celery@{pod}" for pod in pods}
    # Back to one while six tasks run: the two pods removed finish theirs first.
    running = [target.submit_ok(method="celery", duration=6) for _ in range(6)]
    for task in running:
        target.wait_status(task["id"], {"IN_PROGRESS", "DONE"}, timeout=60)
    installed.kubectl("-n", NAMESPACE, "scale", "deployment", "celery-worker", "--replicas=1")
    ended = [target.wait_status(t["id"], timeout=180) for t in running]
    assert [t["status"] for t in ended] == ["DONE"] * 6, ended
    assert all(t["attempts"] == 1 for t in ended), ended
    installed.wait_for("one worker pod", lambda: len(_ready_workers(release)) == 1)


def test_rabbitmq_management_answers_through_a_port_forward(
    installed: Cluster, release: Release
) -> None:
    user = release.secret_value("rabbitmq", "username")
    password = release.secret_value("rabbitmq", "password")
    with installed.port_forward("service/rabbitmq", 15672, NAMESPACE) as url:
        assert httpx.get(f"{url}/api/overview", timeout=10).status_code == 401
        overview = httpx.get(f"{url}/api/overview", auth=(user, password), timeout=10)
        assert overview.status_code == 200, overview.text
        queues = httpx.get(f"{url}/api/queues", auth=(user, password), timeout=10).json()
    assert {"celery", "direct_tasks"} <= {q["name"] for q in queues}


def test_the_nodeport_answers_on_the_nodes_address_and_on_the_host(installed: Cluster) -> None:
    inside = installed.node_get(f"http://{installed.node_ip}:30080/healthz")
    assert inside.status_code == 200, inside.text
    # As kind publishes it (deploy/kind/cluster.yaml): 127.0.0.1:30080 on the host.
    page = httpx.get(f"http://127.0.0.1:{installed.host_port(30080)}/", timeout=10)
    assert page.status_code == 200 and "tasklab" in page.text


@pytest.mark.parametrize(
    ("command", "expect"),
    [
        (["inspect", "registered"], ["process_task", "process_data"]),
        (["inspect", "active"], ["celery@"]),
        (["inspect", "stats"], ["celery@", "pool"]),
        (["purge", "-f"], ["No messages purged", "Purged"]),
    ],
)
def test_the_guides_celery_commands_run_in_the_worker_pod(
    installed: Cluster, release: Release, command: list[str], expect: list[str]
) -> None:
    done = installed.kubectl(
        "-n", NAMESPACE, "exec", "deploy/celery-worker", "--",
        "celery", "-A", "celery_app", *command, timeout=120,
    )  # fmt: skip
    assert any(word in done.stdout for word in expect), done.stdout


def test_secrets_are_generated_not_defaults(release: Release, installed: Cluster) -> None:
    secret = json.loads(
        installed.kubectl("-n", NAMESPACE, "get", "secret", "rabbitmq", "-o", "json").stdout
    )
    password = base64.b64decode(secret["data"]["password"]).decode()
    assert len(password) >= 16 and password not in ("qwerty", "guest")
