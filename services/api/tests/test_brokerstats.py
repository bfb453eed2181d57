"""What housekeeping takes for an empty queue (the orphan sweep's safety), and how the
management API's queue objects are read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tasklab_api.brokerstats import BrokerSnapshot, EmptyQueues, QueueStats, consumer_connections

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def snap(*queues: QueueStats, ok: bool = True) -> BrokerSnapshot:
    return BrokerSnapshot(ok=ok, queues=queues)


def test_placeholder_zeros_are_not_an_empty_queue() -> None:
    assert QueueStats("celery", 0, 0, 1).seen_empty
    assert not QueueStats("celery", 1, 0, 1).seen_empty
    assert not QueueStats("celery", 0, 1, 1).seen_empty
    # Not found, not running, or figures not collected yet (just after a restart).
    assert not QueueStats("celery", 0, 0, 0, counted=False).seen_empty


def test_a_queue_counts_as_empty_only_after_an_unbroken_row_of_empty_looks() -> None:
    watch = EmptyQueues()
    span = timedelta(seconds=60)
    watch.observe(snap(QueueStats("celery", 0, 0, 1), QueueStats("direct_tasks", 3, 0, 1)), T0)
    assert watch.empty_since(span, T0) == {}  # seen once: not yet
    t1 = T0 + timedelta(seconds=61)
    watch.observe(snap(QueueStats("celery", 0, 0, 1), QueueStats("direct_tasks", 0, 0, 1)), t1)
    assert watch.empty_since(span, t1) == {"celery": T0}
    # A look without figures, or without an answer, starts over.
    t2 = t1 + timedelta(seconds=61)
    watch.observe(snap(QueueStats("celery", 0, 0, 1, counted=False)), t2)
    assert watch.empty_since(span, t2) == {}
    t3 = t2 + timedelta(seconds=61)
    watch.observe(snap(QueueStats("celery", 0, 0, 1)), t3)
    watch.observe(snap(ok=False), t3 + timedelta(seconds=61))
    assert watch.empty_since(span, t3 + timedelta(seconds=122)) == {}
    # Messages seen in between start over too.
    watch.observe(snap(QueueStats("celery", 0, 0, 1)), T0)
    watch.observe(snap(QueueStats("celery", 0, 2, 1)), t1)
    watch.observe(snap(QueueStats("celery", 0, 0, 1)), t2)
    assert watch.empty_since(span, t2) == {}


def test_a_consumer_whose_channel_is_closing_is_left_out() -> None:
    """The management API gives a closing channel's ``channel_details`` as ``[]``: the
    overview once answered 500 on it (``'list' object has no attribute 'get'``)."""
    queue = {
        "consumer_details": [
            {"channel_details": {"connection_name": "127.0.0.1:5001 -> 127.0.0.1:5672"}},
            {"channel_details": []},
            {"channel_details": {"connection_name": ""}},
            {},
        ]
    }
    assert consumer_connections(queue) == {"127.0.0.1:5001 -> 127.0.0.1:5672"}
    assert consumer_connections({}) == set()
    assert consumer_connections({"consumer_details": []}) == set()
