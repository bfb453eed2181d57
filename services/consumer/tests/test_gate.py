"""The run gate with real threads: who may run beside whom."""

from __future__ import annotations

import threading
import time

from tasklab_consumer.gate import Entry, RunGate
from tasklab_consumer.shutdown import Shutdown
from tasklab_devtools.waiting import wait_until


class Task(threading.Thread):
    """Holds a slot of the gate until released; records whether it got in."""

    def __init__(self, gate: RunGate, *, alone: bool) -> None:
        super().__init__(daemon=True)
        self.gate = gate
        self.alone = alone
        self.inside = threading.Event()
        self.release = threading.Event()
        self.entered: Entry | None = None

    def run(self) -> None:
        with self.gate.slot(alone=self.alone) as entered:
            self.entered = entered
            if entered is not None:
                self.inside.set()
                self.release.wait(10)

    def finish(self) -> None:
        self.release.set()
        self.join(5)
        assert not self.is_alive()


def start(gate: RunGate, *, alone: bool = False) -> Task:
    task = Task(gate, alone=alone)
    task.start()
    return task


def test_ordinary_tasks_run_side_by_side() -> None:
    gate = RunGate(Shutdown(), max_wait=30)
    tasks = [start(gate) for _ in range(3)]
    for task in tasks:
        assert task.inside.wait(5)
    assert gate.running == 3
    for task in tasks:
        task.finish()
    assert gate.running == 0


def test_a_redelivered_task_waits_for_the_others_then_runs_alone() -> None:
    gate = RunGate(Shutdown(), max_wait=30)
    ordinary = [start(gate) for _ in range(2)]
    for task in ordinary:
        assert task.inside.wait(5)
    suspect = start(gate, alone=True)
    time.sleep(0.3)
    assert not suspect.inside.is_set()  # both others still run
    # An ordinary task arriving now waits too: the redelivered one goes first.
    late = start(gate)
    time.sleep(0.3)
    assert not late.inside.is_set()
    ordinary[0].finish()
    time.sleep(0.3)
    assert not suspect.inside.is_set() and not late.inside.is_set()
    ordinary[1].finish()
    assert suspect.inside.wait(5)
    time.sleep(0.3)
    assert gate.running == 1 and not late.inside.is_set()  # alone
    assert suspect.entered is Entry.ALONE
    suspect.finish()
    assert late.inside.wait(5)
    assert late.entered is Entry.SHARED
    late.finish()


def test_redelivered_tasks_run_one_after_another() -> None:
    gate = RunGate(Shutdown(), max_wait=30)
    suspects = [start(gate, alone=True) for _ in range(3)]
    wait_until(lambda: sum(t.inside.is_set() for t in suspects) == 1, "one task inside")

    def inside() -> list[Task]:
        return [t for t in suspects if t.inside.is_set() and t.is_alive()]

    for _ in range(3):
        wait_until(lambda: len(inside()) == 1, "the next task inside")
        time.sleep(0.2)  # no other one joins it meanwhile
        assert len(inside()) == 1 and gate.running == 1
        inside()[0].finish()
    assert all(t.entered is Entry.ALONE for t in suspects)


def test_waits_are_bounded_then_tasks_run_beside_the_others() -> None:
    """A long task in the way costs isolation, not idle threads: past ``max_wait`` the
    redelivered task, and an ordinary one behind it, run beside the long one."""
    gate = RunGate(Shutdown(), max_wait=0.5)
    long = start(gate)
    assert long.inside.wait(5)
    started = time.monotonic()
    suspect = start(gate, alone=True)
    wait_until(lambda: gate._waiting_alone == 1, "the redelivered task waiting")
    late = start(gate)
    assert suspect.inside.wait(5) and late.inside.wait(5)
    assert time.monotonic() - started >= 0.5  # it did wait its max_wait first
    assert (suspect.entered, late.entered) == (Entry.SHARED, Entry.SHARED)
    assert gate.running == 3
    for task in (long, suspect, late):
        task.finish()
    assert gate.running == 0


def test_no_isolation_when_turned_off() -> None:
    gate = RunGate(Shutdown(), max_wait=0)
    ordinary = start(gate)
    assert ordinary.inside.wait(5)
    suspect = start(gate, alone=True)
    assert suspect.inside.wait(5)
    assert suspect.entered is Entry.SHARED
    for task in (ordinary, suspect):
        task.finish()


def test_a_shutdown_ends_the_wait_without_running() -> None:
    shutdown = Shutdown()
    gate = RunGate(shutdown, max_wait=30)
    running = start(gate)
    assert running.inside.wait(5)
    suspect = start(gate, alone=True)
    time.sleep(0.3)
    late = start(gate)
    time.sleep(0.3)
    shutdown.request()
    suspect.join(5)
    late.join(5)
    assert (suspect.entered, late.entered) == (None, None)
    assert gate.running == 1
    running.finish()
    assert gate.running == 0
