"""A response in one write: the connection's writes held until the event loop turns.

uvicorn writes a response's head (status line and headers) and its body to the
connection in two calls, and the transport sends each at once: two system calls and
two TCP segments per response, and the client woken twice. :class:`OneWrite` stands
in for the connection's transport: what is written is held until the current turn of
the event loop ends (``call_soon``), so that head and body written one after the other,
as an app answers without waiting for anything, leave in one ``write``. A head whose
body comes later (a stream, a slow app) leaves at the end of the turn, as do the chunks
of a stream: nothing waits for more than one turn. Closing sends what is held first;
aborting drops it.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["OneWrite"]


class OneWrite:
    """``transport``, its writes held until the end of the loop's current turn."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        for data in chunks:
            self.write(data)

    def flush(self) -> None:
        """Send what is held (one write)."""
        if self._held:
            data = b"".join(self._held)
            self._held.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held.clear()
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._held))

    def __getattr__(self, name: str) -> Any:
        # Everything else (is_closing, get_extra_info, pause_reading, ...) as is.
        return getattr(self._transport, name)
