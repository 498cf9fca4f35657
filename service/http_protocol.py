"""uvicorn's h11 protocol with each response leaving in one write (``DIGITS_HTTP_IMPLEMENTATION=h11``).

uvicorn writes a response's status line and headers when the app starts the response, and its body in a second
write. With ``TCP_NODELAY`` on (see :mod:`service.supervisor`) each write leaves as its own segment, so a worker
killed between the two (a replica's SIGKILL, an out-of-memory kill) leaves a balancer holding headers it has already
forwarded and a body cut short, which it cannot retry elsewhere; and every answer costs two sends. Here the writes
made in one turn of the event loop are joined and handed to the real transport at the start of the next turn: a
response whose body is ready when it starts (every JSON answer of this service) leaves in one send, whole or not
at all. Everything else (reading, flow control, closing) is the real transport's, after a flush.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


class _JoinedWrites:
    """A transport proxy whose :meth:`write` buffers until the loop's next turn (or :meth:`close`)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        if self._pending and not self._transport.is_closing():
            self._transport.write(b"".join(self._pending))
        self._pending.clear()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class OneWriteH11Protocol(H11Protocol):
    """:class:`H11Protocol` writing through :class:`_JoinedWrites`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_JoinedWrites(transport, self.loop))  # type: ignore[arg-type]
