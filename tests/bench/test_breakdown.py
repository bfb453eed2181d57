"""The parts of the status path in a py-spy profile: each sample counted once, in the
first part it matches, in the order of the parts."""

from __future__ import annotations

from pathlib import Path

from bench.breakdown import breakdown, render

LOOP = (
    "<module> (tasklab-api:10);main (tasklab_api/__main__.py:64);Runner.run (asyncio/runners.py:1)"
)
ROUTE = (
    f"{LOOP};RequestResponseCycle.run_asgi (uvicorn/protocols/http/httptools_impl.py:401);"
    "update_task_status (tasklab_api/routers/callbacks.py:80)"
)


def test_samples_go_to_the_first_part_they_match(tmp_path: Path) -> None:
    raw = tmp_path / "api.txt"
    raw.write_text(
        "\n".join(
            [
                # A store write under the route: the writer, not the route.
                "Thread.run (threading.py:982);_worker (concurrent/futures/thread.py:83);"
                "StoreWriter._transaction (tasklab_api/store.py:667);"
                "DefaultDialect.do_execute (sqlalchemy/engine/default.py:951) 5",
                f"{ROUTE};read_signed (tasklab_api/signing.py:40);verify (auth.py:60) 2",
                f"{ROUTE};State.announce (tasklab_api/state.py:47) 1",
                f"{ROUTE} 3",
                f"{LOOP} 4",  # nothing below the loop: uvloop's own code
                f"{LOOP};RequestResponseCycle.send (uvicorn/protocols/http/h11_impl.py:500) 6",
                "something (elsewhere.py:1) 1",
                "not a sample line",
            ]
        )
    )
    total, parts = breakdown(raw)
    assert total == 22
    assert parts == {
        "api: store writes (writer thread: SQLAlchemy, SQLite)": 5,
        "api: report signature check": 2,
        "api: live-stream notification": 1,
        "api: callback route, the rest": 3,
        "event loop (no Python frame: uvloop's own code)": 4,
        "HTTP server (uvicorn, starlette, fastapi, middleware)": 6,
        "other": 1,
    }
    text = render(raw)
    assert text.startswith("api.txt: 22 samples\n")
    assert " 27.3 %  HTTP server" in text
