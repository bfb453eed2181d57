"""``make logs`` (``python -m tasklab_devtools.devlogs``): the logs of ``make dev``.

``make dev`` prints every service's output to its terminal, prefixed with the service's
name, and also writes it, as is, to ``.dev/logs/<service>.log`` (api, celery-worker,
consumer, celery-beat; started afresh by each ``make dev``). This follows one of them,
or all, the way ``docker compose logs -f celery_worker`` did in the original guide:

    make logs SERVICE=celery-worker      # one service, followed (Ctrl-C to stop)
    make logs                            # all of them, prefixed with their names
    uv run python -m tasklab_devtools.devlogs consumer -n 100 --no-follow

A file that is truncated (the next ``make dev``) is read again from its start.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

__all__ = ["LOG_DIR", "follow", "main", "services"]

#: Where ``make dev`` copies each service's output (StackConfig.log_copy_dir).
LOG_DIR = Path(".dev") / "logs"
POLL_SECONDS = 0.25


def services(log_dir: Path) -> list[str]:
    """The services with a log in ``log_dir``, sorted."""
    return sorted(p.stem for p in log_dir.glob("*.log")) if log_dir.is_dir() else []


@dataclass
class _Tail:
    path: Path
    prefix: str
    position: int = 0
    inode: int | None = None
    partial: bytes = field(default=b"")

    def read(self) -> list[str]:
        """Complete lines written since the last read ([] if none, or no file yet)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        if stat.st_ino != self.inode or stat.st_size < self.position:  # new or truncated
            self.inode, self.position, self.partial = stat.st_ino, 0, b""
        if stat.st_size == self.position:
            return []
        with self.path.open("rb") as f:
            f.seek(self.position)
            data = f.read()
        self.position += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        return [self.prefix + line.decode(errors="replace").rstrip("\r") for line in lines]


def follow(
    paths: dict[str, Path],
    out: TextIO,
    *,
    lines: int = 50,
    keep_following: bool = True,
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Print the last ``lines`` lines of each file, then (``keep_following``) what is
    appended, until ``stop()`` is true. Lines are prefixed ``name | `` when several."""
    width = max((len(name) for name in paths), default=0)
    tails = [
        _Tail(path, f"{name.ljust(width)} | " if len(paths) > 1 else "")
        for name, path in paths.items()
    ]
    for tail in tails:
        history = tail.read()  # (read either way: following goes on from its end)
        for line in history[-lines:] if lines > 0 else []:
            out.write(line + "\n")
    out.flush()
    while keep_following and not stop():
        wrote = False
        for tail in tails:
            for line in tail.read():
                out.write(line + "\n")
                wrote = True
        if wrote:
            out.flush()
        time.sleep(POLL_SECONDS)


def main(argv: list[str] | None = None, stop: threading.Event | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make logs [SERVICE=name]", description="Follow the logs of make dev's services."
    )
    parser.add_argument("service", nargs="?", help="api, celery-worker, consumer, celery-beat")
    parser.add_argument("-n", "--lines", type=int, default=50, help="lines of history first")
    parser.add_argument("--no-follow", action="store_true", help="print and exit")
    parser.add_argument("--dir", type=Path, default=LOG_DIR, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    known = services(args.dir)
    if not known:
        print(
            f"logs: no logs in {args.dir}: start the stack with make dev in this folder",
            file=sys.stderr,
        )
        return 1
    if args.service and args.service not in known:
        print(f"logs: no log of {args.service!r} (services: {', '.join(known)})", file=sys.stderr)
        return 2
    chosen = [args.service] if args.service else known
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: the usual way to stop
        follow(
            {name: args.dir / f"{name}.log" for name in chosen},
            sys.stdout,
            lines=args.lines,
            keep_following=not args.no_follow,
            stop=stop.is_set if stop is not None else lambda: False,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
