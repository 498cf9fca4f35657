"""The typed state of one running app: built and started by the lifespan, read by the routes, stopped on shutdown.

The engine (models and batchers) is either this process's own or the shared inference process's, reached over
``settings.engine_socket``; the routes see the same :class:`service.engine.Registry` and
:class:`service.engine.Batcher` interfaces either way.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from service.config import Settings
from service.engine import Batcher, Engine, Registry, start_engine
from service.engine_client import EngineClient, RemoteBatcher, RemoteRegistry
from service.inference import DigitPrediction, DigitRequest
from service.inflight import ByteBudget
from service.preprocess_pool import PreprocessPool, ThreadPool
from service.reading import LineReading, LineRequest
from service.telemetry import Telemetry
from service.tracing import StageTracer

logger = logging.getLogger(__name__)

# Imported once by the preprocessing pool's fork server, so every worker starts with the decoders loaded.
PRELOAD = ("imaging.digit", "imaging.detection")


class Upstream:
    """Counts requests admitted but not yet handed to the batcher (their upload is being read or decoded).

    The batcher asks it whether a batch should wait for company: with nobody upstream, no request can join.
    ``on_change`` hears when the count turns zero or stops being zero (how an inference process in another
    process is told).
    """

    def __init__(self, on_change: Callable[[int], None] | None = None) -> None:
        self.count = 0
        self._on_change = on_change

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        self._set(self.count + 1)
        try:
            yield
        finally:
            self._set(self.count - 1)

    def _set(self, count: int) -> None:
        previous, self.count = self.count, count
        # Only "none" against "some" matters to the batcher: told on those changes, not on every request.
        if self._on_change is not None and (count == 0 or previous == 0):
            self._on_change(count)


@dataclass
class AppState:
    """Everything a request needs; one instance per app, held in the lifespan state under ``"service"``."""

    settings: Settings
    telemetry: Telemetry
    tracer: StageTracer
    engine: Engine | EngineClient
    registry: Registry
    batcher: Batcher[DigitRequest, DigitPrediction]
    line_batcher: Batcher[LineRequest, LineReading]
    preprocess_pool: PreprocessPool | ThreadPool
    upstream: Upstream
    byte_budget: ByteBudget
    accepting: bool = True
    # Set on SIGTERM for the pre-stop drain: readiness says 503 while requests are still served.
    draining: bool = False

    @property
    def ready(self) -> bool:
        """Accepting requests, not draining, with at least one model loaded, verified and warmed up."""
        return self.accepting and not self.draining and self.batcher.running and bool(self.registry.models.names())

    def begin_drain(self) -> None:
        """Turn readiness to 503 so load balancers stop routing here; requests are still served until :meth:`stop`."""
        self.draining = True
        logger.info("SIGTERM: readiness is 503; serving for %.1f s more, then stopping", self.settings.shutdown_drain_s)

    async def stop(self) -> None:
        """Refuse new work (readiness turns 503), finish every accepted request, then stop the workers."""
        self.accepting = False
        await self.engine.stop()
        await self.preprocess_pool.shutdown()
        logger.info("stopped: every accepted request was answered")


async def start_state(settings: Settings, telemetry: Telemetry, tracer: StageTracer) -> AppState:
    """Start the engine (or connect to the inference process) and the preprocessing pool."""
    pool: PreprocessPool | ThreadPool
    if settings.preprocess_workers:
        pool = PreprocessPool(
            settings.preprocess_workers,
            max_waiting=settings.queue_max_size,
            preload=PRELOAD,
            job_timeout_s=settings.preprocess_timeout_s,
        )
    else:
        pool = ThreadPool(max_waiting=settings.queue_max_size)
    await pool.start()
    engine: Engine | EngineClient
    registry: Registry
    batcher: Batcher[DigitRequest, DigitPrediction]
    line_batcher: Batcher[LineRequest, LineReading]
    if settings.engine_socket is None:
        upstream = Upstream()
        engine = await start_engine(settings, telemetry, more_coming=lambda: upstream.count > 0)
        registry, batcher, line_batcher = engine.registry, engine.batcher, engine.line_batcher
    else:
        client = EngineClient(settings.engine_socket)
        upstream = Upstream(client.set_upstream)
        await client.start(settings.engine_start_timeout_s)
        engine, registry = client, RemoteRegistry(client)
        batcher = RemoteBatcher(client, "digit", settings.queue_max_size)
        line_batcher = RemoteBatcher(client, "line", settings.queue_max_size)
    byte_budget = ByteBudget(settings.max_inflight_bytes)
    telemetry.track(
        queue_depth=lambda: engine.queue_depth,
        preprocess_pending=lambda: pool.pending,
        inflight_bytes=lambda: byte_budget.in_use_bytes,
        model_versions=lambda: {name: model.version for name, model in registry.models.models.items()},
    )
    return AppState(
        settings=settings,
        telemetry=telemetry,
        tracer=tracer,
        engine=engine,
        registry=registry,
        batcher=batcher,
        line_batcher=line_batcher,
        preprocess_pool=pool,
        upstream=upstream,
        byte_budget=byte_budget,
    )
