"""Many slow, large uploads held open against a real uvicorn process: the byte budget admits only what fits,
refuses the rest with 503 before reading their bodies, keeps resident memory under a stated bound and readiness
at 200, refuses new requests quickly while full, and every admitted upload is answered once it completes."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import pytest

from contract import ModelStore
from harness.server import RunningServer
from service import errors
from tests.reliability.test_overload import rss_mb
from tests.support import images
from tests.support.servers import ServerFactory, record_figures, server_env

pytestmark = pytest.mark.anyio
logger = logging.getLogger(__name__)

MIB = 1024 * 1024
UPLOAD_BYTES = 3 * MIB
INFLIGHT_BYTES = 16 * MIB
ADMITTED = INFLIGHT_BYTES // UPLOAD_BYTES
CLIENTS = 40
HELD_BACK_BYTES = 1024
# Each byte in flight exists as the received body, the copy sent to a worker and the worker's copy; the slack
# covers allocator and interpreter noise on this shared machine.
RSS_PER_INFLIGHT_BYTE = 3.0
RSS_SLACK_MB = 40.0
REFUSAL_LIMIT_S = 0.5
TIMEOUT_S = 30.0
SAMPLE_S = 0.05


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def padded_upload() -> tuple[bytes, str]:
    """A real digit PNG plus a filler field, ``UPLOAD_BYTES`` in all: the filler is read and dropped."""
    request = httpx.Request(
        "POST",
        "/predict",
        data={"note": "x" * (UPLOAD_BYTES - 2000)},
        files={"file": ("digit.png", images.encode(images.seven((200, 200)), "PNG"), "image/png")},
    )
    body = request.read()
    assert UPLOAD_BYTES - 2 * 2000 < len(body) <= UPLOAD_BYTES
    return body, request.headers["content-type"]


def metric(text: str, series: str) -> float:
    """The value of one series in Prometheus text."""
    return next(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(series + " "))


class SlowUpload:
    """One connection that sends its headers and all but the last bytes of its body, then waits to be told."""

    def __init__(self, server: RunningServer, body: bytes, content_type: str) -> None:
        self.server, self.body, self.content_type = server, body, content_type
        self.status: int | None = None
        self.answered_after_s: float | None = None

    async def start(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.server.port)
        head = (
            f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {self.content_type}\r\n"
            f"Content-Length: {len(self.body)}\r\n\r\n"
        )
        self.started = time.perf_counter()
        self.writer.write(head.encode())
        await self.writer.drain()
        self.answer = asyncio.create_task(self._status())
        # Refused requests are answered without their body being read; the rest of it would go nowhere.
        done, _ = await asyncio.wait({self.answer}, timeout=REFUSAL_LIMIT_S)
        if not done:
            self.writer.write(self.body[:-HELD_BACK_BYTES])
            await self.writer.drain()

    async def finish(self) -> int:
        if not self.answer.done():
            self.writer.write(self.body[-HELD_BACK_BYTES:])
            await self.writer.drain()
        status = await asyncio.wait_for(self.answer, TIMEOUT_S)
        self.writer.close()
        return status

    async def _status(self) -> int:
        line = await self.reader.readline()
        self.answered_after_s = time.perf_counter() - self.started
        self.status = int(line.split()[1])
        return self.status


async def test_slow_large_uploads_are_bounded_by_the_byte_budget(store: ModelStore, serve: ServerFactory) -> None:
    server = serve(
        server_env(
            store.root,
            # The budget is each front end's: one front end, so that it is the whole server's.
            workers=1,
            max_inflight_bytes=INFLIGHT_BYTES,
            max_upload_bytes=2 * UPLOAD_BYTES,
            queue_max_size=CLIENTS,
            log_level="warning",
        )
    )
    body, content_type = padded_upload()
    rss_before_mb = rss_mb(server.process.pid)
    peak_rss_mb = rss_before_mb

    uploads = [SlowUpload(server, body, content_type) for _ in range(CLIENTS)]
    for upload in uploads:
        await upload.start()
        peak_rss_mb = max(peak_rss_mb, rss_mb(server.process.pid))
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT_S) as client:
        started = time.perf_counter()
        newcomer = await client.post("/predict", content=body, headers={"Content-Type": content_type})
        newcomer_s = time.perf_counter() - started
        ready = await client.get("/health/ready")
        inflight = await client.get("/metrics")
        peak_rss_mb = max(peak_rss_mb, rss_mb(server.process.pid))
        statuses = await asyncio.gather(*(upload.finish() for upload in uploads))
        peak_rss_mb = max(peak_rss_mb, rss_mb(server.process.pid))
        after = await client.post("/predict", content=body, headers={"Content-Type": content_type})
        metrics = (await client.get("/metrics")).text

    refused = [upload for upload in uploads if upload.status == 503]
    refusal_s = max(upload.answered_after_s or 0.0 for upload in refused)
    growth_mb = peak_rss_mb - rss_before_mb
    bound_mb = RSS_PER_INFLIGHT_BYTE * INFLIGHT_BYTES / MIB + RSS_SLACK_MB
    figures = {
        "clients": CLIENTS,
        "upload_bytes": len(body),
        "max_inflight_bytes": INFLIGHT_BYTES,
        "admitted": statuses.count(200),
        "refused_503": len(refused),
        "slowest_refusal_s": round(refusal_s, 3),
        "new_request_refused_in_s": round(newcomer_s, 3),
        "rss_before_mb": round(rss_before_mb),
        "rss_peak_mb": round(peak_rss_mb),
        "rss_growth_mb": round(growth_mb),
        "rss_bound_mb": round(bound_mb),
        "rss_growth_per_inflight_byte": round(growth_mb * MIB / INFLIGHT_BYTES, 2),
    }
    logger.info("slow uploads: %s", figures)
    record_figures("slow_uploads", figures)

    assert statuses.count(200) == ADMITTED
    assert statuses.count(503) == CLIENTS - ADMITTED
    assert refusal_s <= REFUSAL_LIMIT_S
    assert (newcomer.status_code, newcomer.json()) == (503, {"detail": errors.MemoryBudgetError.default_detail})
    assert newcomer.headers["retry-after"] == "1"
    assert newcomer_s <= REFUSAL_LIMIT_S
    assert ready.status_code == 200
    assert metric(inflight.text, "digits_inflight_bytes") == ADMITTED * len(body)
    assert growth_mb <= bound_mb
    assert after.status_code == 200
    assert metric(metrics, 'digits_refusals_total{reason="memory_budget"}') == CLIENTS - ADMITTED + 1
