"""Overload on a real uvicorn process: at several times its measured capacity it answers only 200, or 503 with
``Retry-After``; accepted requests wait no longer than the queue settings allow; memory stays flat; readiness
stays 200; and the first request after the load drops is served at once. A refusal costs no upload bytes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import pytest
from fastapi.testclient import TestClient

from contract import ModelStore
from harness.processes import rss_mb
from service import errors
from service.config import Settings
from service.deps import STATE_KEY
from service.main import create_app
from tests.support import images
from tests.support.servers import ServerFactory, record_figures, server_env

pytestmark = pytest.mark.anyio
logger = logging.getLogger(__name__)

# Small queues, so that overload is reached with few clients and the latency bound is tight.
QUEUE_MAX_SIZE = 4
MAX_BATCH_SIZE = 4
PREPROCESS_WORKERS = 1
# A 3500 x 3500 PNG (12 megapixels, 70 kB) costs tens of ms to decode: the service's work, not the HTTP exchange,
# sets its capacity, so a Python client on the same two cores can offer several times that.
IMAGE_SIDE_PIXELS = 3500
CAPACITY_WORKERS = PREPROCESS_WORKERS + 2
OVERLOAD_WORKERS = 32
CAPACITY_S = 3.0
OVERLOAD_S = 5.0
MIN_OVERLOAD_FACTOR = 3.0
# An accepted request waits behind at most the decoding backlog and one full batcher queue; each step costs about
# 1 / capacity. The slack absorbs the machine's noise; an unbounded queue would grow by seconds per second instead.
LATENCY_SLACK = 4.0
WORK_AHEAD = PREPROCESS_WORKERS + QUEUE_MAX_SIZE + QUEUE_MAX_SIZE + 1
# The HTTP exchange outside the handler (reading, parsing, answering) waits for an event loop busy refusing, and
# for a CPU shared with the client.
EVENT_LOOP_ALLOWANCE_S = 2.0
RSS_GROWTH_LIMIT_MB = 100.0
MIN_GOODPUT_FRACTION = 0.2
RECOVERY_LIMIT_S = 1.0
SAMPLE_S = 0.05
TIMEOUT_S = 30.0
HOLD_S = 2.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass(frozen=True)
class Outcome:
    status: int
    latency_s: float
    retry_after: str | None
    detail: str | None
    # Time inside the service, from the answer's own timings (200 only).
    service_s: float | None


@dataclass(frozen=True)
class Upload:
    body: bytes
    content_type: str

    @classmethod
    def digit(cls) -> Upload:
        data = images.encode(images.seven((IMAGE_SIDE_PIXELS, IMAGE_SIDE_PIXELS)), "PNG")
        request = httpx.Request("POST", "/predict", files={"file": ("digit.png", data, "image/png")})
        return cls(request.read(), request.headers["content-type"])

    async def send(self, client: httpx.AsyncClient) -> Outcome:
        started = time.perf_counter()
        response = await client.post("/predict", content=self.body, headers={"Content-Type": self.content_type})
        latency_s = time.perf_counter() - started
        body = response.json()
        service_ms = body["timings_ms"]["total_ms"] if response.status_code == 200 else None
        return Outcome(
            status=response.status_code,
            latency_s=latency_s,
            retry_after=response.headers.get("retry-after"),
            detail=body.get("detail"),
            service_s=None if service_ms is None else service_ms / 1000,
        )


async def drive(url: str, upload: Upload, workers: int, duration_s: float) -> tuple[list[Outcome], float]:
    """``workers`` clients, each on its own connection, sending back to back for ``duration_s``."""
    outcomes: list[Outcome] = []
    deadline = time.perf_counter() + duration_s

    async def worker() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT_S) as client:
            while time.perf_counter() < deadline:
                outcomes.append(await upload.send(client))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return outcomes, time.perf_counter() - started


@dataclass
class Watch:
    """Samples the server's resident memory and readiness until stopped."""

    url: str
    pid: int
    peak_rss_mb: float = 0.0
    readiness: Counter[int] = field(default_factory=Counter)

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=TIMEOUT_S) as client:
            while not stop.is_set():
                self.peak_rss_mb = max(self.peak_rss_mb, rss_mb(self.pid))
                self.readiness[(await client.get("/health/ready")).status_code] += 1
                await asyncio.sleep(SAMPLE_S)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def test_overload_is_refused_with_503_and_bounded_latency(store: ModelStore, serve: ServerFactory) -> None:
    server = serve(
        server_env(
            store.root,
            queue_max_size=QUEUE_MAX_SIZE,
            max_batch_size=MAX_BATCH_SIZE,
            preprocess_workers=PREPROCESS_WORKERS,
            log_level="warning",
        )
    )
    upload = Upload.digit()
    rss_before_mb = rss_mb(server.process.pid)

    measured, measured_s = await drive(server.url, upload, CAPACITY_WORKERS, CAPACITY_S)
    capacity_rps = sum(outcome.status == 200 for outcome in measured) / measured_s
    watch = Watch(server.url, server.process.pid)
    stop_watch = asyncio.Event()
    watcher = asyncio.create_task(watch.run(stop_watch))
    outcomes, overload_s = await drive(server.url, upload, OVERLOAD_WORKERS, OVERLOAD_S)
    stop_watch.set()
    await watcher
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT_S) as client:
        recovery = await upload.send(client)
    rss_after_mb = rss_mb(server.process.pid)

    accepted = [outcome for outcome in outcomes if outcome.status == 200]
    refused = [outcome for outcome in outcomes if outcome.status == 503]
    factor = len(outcomes) / overload_s / capacity_rps
    queue_bound_s = LATENCY_SLACK * WORK_AHEAD / capacity_rps
    logger.info(
        "capacity %.1f req/s; overload x%.1f: %d answered 200, %d answered 503; accepted p99 %.3f s end to end, "
        "%.3f s in the service (bound %.3f s); RSS %.0f / %.0f / %.0f MB; recovery %.3f s",
        capacity_rps,
        factor,
        len(accepted),
        len(refused),
        percentile([o.latency_s for o in accepted], 0.99),
        percentile([o.service_s or 0.0 for o in accepted], 0.99),
        queue_bound_s,
        rss_before_mb,
        watch.peak_rss_mb,
        rss_after_mb,
        recovery.latency_s,
    )
    record_figures(
        "overload",
        {
            "queue_max_size": QUEUE_MAX_SIZE,
            "max_batch_size": MAX_BATCH_SIZE,
            "preprocess_workers": PREPROCESS_WORKERS,
            "image_pixels": IMAGE_SIDE_PIXELS**2,
            "capacity_rps": round(capacity_rps, 1),
            "overload_factor": round(factor, 1),
            "answered_200": len(accepted),
            "answered_503": len(refused),
            "other_answers": len(outcomes) - len(accepted) - len(refused),
            "accepted_p99_end_to_end_s": round(percentile([o.latency_s for o in accepted], 0.99), 2),
            "accepted_p99_in_service_s": round(percentile([o.service_s or 0.0 for o in accepted], 0.99), 2),
            "queue_bound_s": round(queue_bound_s, 2),
            "rss_before_mb": round(rss_before_mb),
            "rss_peak_mb": round(watch.peak_rss_mb),
            "rss_after_mb": round(rss_after_mb),
            "first_200_after_load_s": round(recovery.latency_s, 2),
        },
    )
    assert len(accepted) + len(refused) == len(outcomes)
    assert factor >= MIN_OVERLOAD_FACTOR
    assert refused
    assert {(o.retry_after, o.detail) for o in refused} == {("1", errors.QueueFullError.default_detail)}
    assert len(accepted) / overload_s >= MIN_GOODPUT_FRACTION * capacity_rps
    assert percentile([o.service_s or 0.0 for o in accepted], 0.99) <= queue_bound_s
    assert percentile([o.latency_s for o in accepted], 0.99) <= queue_bound_s + EVENT_LOOP_ALLOWANCE_S
    assert watch.readiness == Counter({200: sum(watch.readiness.values())})
    assert watch.peak_rss_mb - rss_before_mb <= RSS_GROWTH_LIMIT_MB
    assert rss_after_mb - rss_before_mb <= RSS_GROWTH_LIMIT_MB
    assert recovery.status == 200
    assert recovery.latency_s <= RECOVERY_LIMIT_S


def test_full_decoding_backlog_refuses_before_reading_the_upload(settings: Settings) -> None:
    small = settings.model_copy(update={"preprocess_workers": 1, "queue_max_size": 1})

    with TestClient(create_app(small)) as client:
        pool = client.app_state[STATE_KEY].preprocess_pool
        portal = client.portal
        assert portal is not None
        # One decoding job running and one waiting: the backlog is full for at least HOLD_S.
        held = [portal.start_task_soon(pool.run, time.sleep, HOLD_S) for _ in range(2)]
        deadline = time.monotonic() + TIMEOUT_S
        while pool.pending < 2 and time.monotonic() < deadline:
            time.sleep(SAMPLE_S / 10)
        # Read, this body would be refused with 422 (it holds no multipart file).
        response = client.post("/predict", content=b"not an upload", headers={"Content-Type": "text/plain"})
        finished = [job.result(TIMEOUT_S) for job in held]

    assert finished == [None, None]
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {"detail": errors.QueueFullError.default_detail}
