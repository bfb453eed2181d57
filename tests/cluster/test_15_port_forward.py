"""The UI through a `kubectl port-forward`, as users open it; and `kubectl port-forward`
ending for good the first time the pod resets a forwarded connection (or goes away):
the tests' port-forwards and `make port-forward` start it again on the same port."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
from playwright.sync_api import expect

from tasklab_devtools.browser import (
    card,
    chromium,
    open_board,
    submitted_num,
    task_row,
    wait_for_statuses,
    watch_statuses,
)
from tasklab_devtools.cluster.handle import NAMESPACE, Cluster
from tasklab_devtools.kube import Release
from tasklab_devtools.procs import free_port

ROOT = Path(__file__).resolve().parents[2]


def _kubectl_forwarding(port: int) -> list[int]:
    """The pids of the kubectl port-forward processes that listen on ``port``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        listens = any(a.startswith(f"{port}:".encode()) for a in argv)
        if Path(argv[0].decode()).name == "kubectl" and b"port-forward" in argv and listens:
            found.append(int(entry.name))
    return found


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def _kill_and_see_it_back(installed: Cluster, port: int, url: str) -> None:
    (first,) = _kubectl_forwarding(port)
    os.kill(first, signal.SIGKILL)  # as kubectl ends by itself on a reset connection
    installed.wait_for(
        "the port-forward started again",
        lambda: _answers(url) and _kubectl_forwarding(port) not in ([], [first]),
        30,
    )


def test_the_board_through_a_port_forward_shows_a_task_go_done(
    installed: Cluster, release: Release
) -> None:
    """In Chromium, through `kubectl port-forward svc/api`: a task sent with the board's
    form shows PENDING, IN_PROGRESS, then DONE, by the worker pod that ran it (PENDING
    only when the form's answer comes before the worker's start, as the design allows:
    never after it)."""
    with release.port_forward("api", 8080) as url, chromium() as browser:
        page = open_board(browser, url)
        watch_statuses(page)
        form = card(page, "rabbitmq")
        form.get_by_label("Duration, s").fill("4")
        form.get_by_role("button", name="Send via RabbitMQ").click()
        num = submitted_num(form)
        wait_for_statuses(page, num, ["IN_PROGRESS", "DONE"], timeout_ms=90_000)
        trail = page.evaluate("(n) => window.__trail[n]", str(num))
        assert trail in (["PENDING", "IN_PROGRESS", "DONE"], ["IN_PROGRESS", "DONE"]), trail
        expect(task_row(page, num).locator("td").nth(4)).to_contain_text("consumer@consumer-")
        page.context.close()


def test_the_tests_port_forward_is_started_again(installed: Cluster, release: Release) -> None:
    with release.port_forward("api", 8080) as url:
        assert _answers(url)
        _kill_and_see_it_back(installed, int(url.rsplit(":", 1)[1]), url)


def test_make_port_forward_is_started_again_and_stops_clean(installed: Cluster) -> None:
    api, rabbitmq = free_port(), free_port()
    env = {**installed.env, "NAMESPACE": NAMESPACE, "API_PORT": str(api)}
    env["RABBITMQ_PORT"] = str(rabbitmq)
    script = subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "port-forward.sh")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{api}"
        installed.wait_for("make port-forward's api", lambda: _answers(url), 60)
        _kill_and_see_it_back(installed, api, url)
    finally:
        script.terminate()  # SIGTERM, as from a terminal's Ctrl-C or a kill
        out, _ = script.communicate(timeout=30)
    time.sleep(1)
    assert _kubectl_forwarding(api) == [] and _kubectl_forwarding(rabbitmq) == [], out
    assert "Web UI and API ended; starting it again" in out, out
