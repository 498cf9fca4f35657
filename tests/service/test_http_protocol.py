"""Joined writes: what uvicorn writes in one turn of the event loop reaches the socket in one write."""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path

import pytest

from contract import ModelStore
from harness.server import running_server
from service.http_protocol import _JoinedWrites
from tests.support.servers import server_env

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class _Recording(asyncio.Transport):
    """A transport that records each write it is handed."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


async def test_writes_of_one_turn_leave_together_at_the_next() -> None:
    real = _Recording()
    joined = _JoinedWrites(real, asyncio.get_running_loop())

    joined.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    joined.write(b"")
    joined.write(b"{}")
    assert real.writes == []
    await asyncio.sleep(0)

    assert real.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    assert joined.get_extra_info("peername") == ("127.0.0.1", 1)


async def test_close_sends_what_is_pending_first() -> None:
    real = _Recording()
    joined = _JoinedWrites(real, asyncio.get_running_loop())

    joined.write(b"last answer")
    joined.close()
    await asyncio.sleep(0)

    assert real.writes == [b"last answer"]
    assert real.closed


async def test_nothing_is_written_to_a_closing_transport() -> None:
    real = _Recording()
    joined = _JoinedWrites(real, asyncio.get_running_loop())

    joined.write(b"too late")
    real.closed = True
    await asyncio.sleep(0)

    assert real.writes == []


def _data_segments_received(sock: socket.socket) -> int:
    """``tcpi_data_segs_in`` of Linux's ``struct tcp_info`` (since 4.6): segments that carried data to ``sock``."""
    return int(struct.unpack_from("I", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256), 152)[0])


def test_an_answer_arrives_in_one_segment(store: ModelStore, tmp_path: Path) -> None:
    """uvicorn alone writes the head and the body apart: two segments, with TCP_NODELAY on."""
    with running_server(server_env(store.root, workers=1), tmp_path / "server.log") as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"GET /health/live HTTP/1.1\r\nhost: digits\r\n\r\n")
            sock.settimeout(10)
            answer = b""
            while not answer.endswith(b"}"):
                answer += sock.recv(4096)
            segments = _data_segments_received(sock)

    assert answer.startswith(b"HTTP/1.1 200")
    assert segments == 1
