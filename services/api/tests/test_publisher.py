"""The Celery message the api publishes: what a Celery worker expects."""

from __future__ import annotations

from celery.utils.saferepr import saferepr

from tasklab_api.publisher import REPR_MAX, Publisher, _display
from tasklab_common.messages import TaskMessage, TaskParams
from tasklab_common.models import Method, TaskKind


def test_small_arguments_display_as_celery_displays_them() -> None:
    values: list[tuple[object, ...] | dict[str, object]] = [
        (7, 1.5, "celery"),
        {"method": "celery", "fail_times": 0},
        (3, [1.0, 2.0], "x"),
    ]
    for value in values:
        assert _display(value) == saferepr(value, REPR_MAX)


def test_a_long_list_is_displayed_within_the_bound() -> None:
    value = (7, [float(i) for i in range(10_000)], "celery")
    shown = _display(value)
    assert shown == saferepr(value, REPR_MAX)
    assert len(shown) < REPR_MAX + 50 and shown.startswith("(7, [0.0, 1.0")


def test_the_message_carries_the_display_headers() -> None:
    publisher = Publisher("amqp://nobody:nothing@127.0.0.1:1/", publish_timeout=1)
    msg = TaskMessage(
        task_id="t-1",
        num=7,
        kind=TaskKind.PROCESS_DATA,
        method=Method.CELERY,
        params=TaskParams(numbers=[1, 2, 3]),
    )
    message = publisher._celery_message(msg)
    headers = message.headers
    assert headers["task"] == "process_data" and headers["id"] == "t-1"
    assert headers["argsrepr"] == "(7, [1.0, 2.0, 3.0], 'celery')"
    assert headers["kwargsrepr"] == "{'method': 'celery', 'fail_times': 0, 'duration': 0.0}"
