"""SIGTERM during load on a real uvicorn process: readiness turns 503 first, requests that come anyway are still
served during the drain, the listening socket closes only after it, and every accepted request is answered."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import pytest

from contract import ModelStore
from harness.server import RunningServer
from tests.support import images
from tests.support.servers import ServerFactory, record_figures, server_env

pytestmark = pytest.mark.anyio
logger = logging.getLogger(__name__)

DRAIN_S = 1.0
TIMEOUT_S = 15.0
POLL_S = 0.02
LOAD_WORKERS = 8
# Responses before the signal, so that the load is in full swing when it arrives.
WARM_RESPONSES = 40


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def encoded_upload() -> tuple[bytes, str]:
    """A 600x600 PNG digit as a multipart body and its Content-Type (a few ms of decoding per request)."""
    request = httpx.Request(
        "POST", "/predict", files={"file": ("digit.png", images.encode(images.seven((600, 600)), "PNG"))}
    )
    return request.read(), request.headers["content-type"]


@dataclass
class Load:
    """Clients that send uploads back to back until readiness turns 503, as a load balancer's traffic would."""

    url: str
    body: bytes
    content_type: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    warm: asyncio.Event = field(default_factory=asyncio.Event)
    outcomes: Counter[str] = field(default_factory=Counter)
    answered_after_sigterm: int = 0
    sigterm_at: float | None = None

    async def worker(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=TIMEOUT_S) as client:
            while not self.stop.is_set():
                try:
                    response = await client.post(
                        "/predict", content=self.body, headers={"Content-Type": self.content_type}
                    )
                except httpx.TransportError as exc:
                    self.outcomes[type(exc).__name__] += 1
                    continue
                self.outcomes[str(response.status_code)] += 1
                if self.sigterm_at is not None:
                    self.answered_after_sigterm += 1
                if sum(self.outcomes.values()) >= WARM_RESPONSES:
                    self.warm.set()


async def wait_until_ready_is_503(url: str) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT_S) as client:
        async with asyncio.timeout(TIMEOUT_S):
            while (response := await client.get("/health/ready")).status_code == 200:
                await asyncio.sleep(POLL_S)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    return time.monotonic()


async def wait_until_refused(server: RunningServer) -> float:
    """Poll with new connections until one is refused: the listening socket is closed."""
    async with asyncio.timeout(TIMEOUT_S):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            except ConnectionRefusedError:
                return time.monotonic()
            writer.close()
            await writer.wait_closed()
            await asyncio.sleep(POLL_S)


async def start_slow_upload(
    server: RunningServer, body: bytes, content_type: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A request whose headers and first half of body are sent now; the rest comes when the test says so."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body[: len(body) // 2])
    await writer.drain()
    return reader, writer


async def finish_slow_upload(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes) -> int:
    writer.write(body[len(body) // 2 :])
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    return int(status_line.split()[1])


async def test_sigterm_drains_by_readiness_then_answers_every_accepted_request(
    store: ModelStore, serve: ServerFactory
) -> None:
    server = serve(server_env(store.root, shutdown_drain_s=DRAIN_S, shutdown_timeout_s=TIMEOUT_S))
    body, content_type = encoded_upload()
    load = Load(server.url, body, content_type)
    slow = await start_slow_upload(server, body, content_type)
    workers = [asyncio.create_task(load.worker()) for _ in range(LOAD_WORKERS)]
    await asyncio.wait_for(load.warm.wait(), TIMEOUT_S)

    load.sigterm_at = sigterm_at = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    ready_503_at = await wait_until_ready_is_503(server.url)
    load.stop.set()
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT_S) as late_client:
        late = await late_client.post("/predict", content=body, headers={"Content-Type": content_type})
    refused_at = await wait_until_refused(server)
    slow_status = await finish_slow_upload(*slow, body)
    await asyncio.gather(*workers)
    exit_code = await asyncio.to_thread(server.process.wait, TIMEOUT_S)
    exited_at = time.monotonic()
    figures = {
        "drain_s": DRAIN_S,
        "readiness_503_after_s": round(ready_503_at - sigterm_at, 2),
        "socket_closed_after_s": round(refused_at - sigterm_at, 2),
        "exit_after_s": round(exited_at - sigterm_at, 2),
        "load_answers": dict(load.outcomes),
        "answered_after_sigterm": load.answered_after_sigterm,
    }
    logger.info("after SIGTERM: %s", figures)
    record_figures("shutdown", figures)

    assert ready_503_at < refused_at
    assert late.status_code == 200
    assert refused_at - sigterm_at >= DRAIN_S
    assert slow_status == 200
    assert set(load.outcomes) == {"200"}
    assert load.answered_after_sigterm > 0
    # The supervisor exits with 0 once the front ends and then the inference process have stopped.
    assert exit_code == 0
    log = server.log()
    assert "SIGTERM: readiness is 503" in log
    assert "stopped: every accepted request was answered" in log
    assert "inference process stopped: every queued item was answered" in log


async def test_second_sigterm_skips_the_rest_of_the_drain(store: ModelStore, serve: ServerFactory) -> None:
    server = serve(server_env(store.root, shutdown_drain_s=10 * TIMEOUT_S))

    server.process.send_signal(signal.SIGTERM)
    await wait_until_ready_is_503(server.url)
    server.process.send_signal(signal.SIGTERM)
    exit_code = await asyncio.to_thread(server.process.wait, TIMEOUT_S)

    assert exit_code == 0
