"""The live-stream reader of the test tooling, on the api's event format."""

from __future__ import annotations

import json

from tasklab_devtools.livestream import TaskEventLog


def test_task_events_are_kept_in_order_and_hello_is_seen() -> None:
    log = TaskEventLog()
    lines = [
        "event: hello",
        'data: {"server": "tasklab"}',
        "",
        ": keep-alive comment",
        "event: task",
        f"data: {json.dumps({'id': 'a', 'status': 'PENDING'})}",
        "",
        "event: task",
        f"data: {json.dumps({'id': 'a', 'status': 'DONE'})}",
        "",
    ]
    for line in lines:
        log.feed(line)
    assert log.hello.is_set()
    assert [e["status"] for e in log.events] == ["PENDING", "DONE"]


def test_a_data_line_without_its_event_line_is_not_a_task() -> None:
    log = TaskEventLog()
    log.feed("event: task")
    log.new_connection()  # the connection broke after the event line
    log.feed('data: {"id": "b"}')
    log.feed("event: task")
    log.feed("")
    log.feed('data: {"id": "c"}')  # a blank line ended the event before its data
    assert log.events == []
    assert not log.hello.is_set()


def test_bytes_are_split_into_lines_at_newlines_only() -> None:
    log = TaskEventLog()
    event = json.dumps({"id": "d", "label": "a\u2028b é"}, ensure_ascii=False).encode()
    stream = b"event: hello\r\ndata: {}\r\n\r\nevent: task\ndata: " + event + b"\n\n"
    for i in range(0, len(stream), 7):  # cut anywhere, even inside a character
        log.feed_bytes(stream[i : i + 7])
    assert log.hello.is_set()
    assert log.events == [{"id": "d", "label": "a\u2028b é"}]
