"""The typed state of one running app: built and started by the lifespan, read by the routes, stopped on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from contract import ModelStore
from contract.device import select_device
from service.batching import MicroBatcher
from service.config import Settings
from service.frames import FrameTracker
from service.inference import BatchPredictor, DigitPrediction, DigitRequest
from service.inflight import ByteBudget
from service.preprocess_pool import PreprocessPool
from service.reading import LineBatchReader, LineReading, LineRequest
from service.registry import ModelRegistry, watch_store
from service.telemetry import Telemetry
from service.tracing import StageTracer

logger = logging.getLogger(__name__)

# Imported once by the preprocessing pool's fork server, so every worker starts with the decoders loaded.
PRELOAD = ("imaging.digit", "imaging.detection")


class Upstream:
    """Counts requests admitted but not yet handed to the batcher (their upload is being read or decoded).

    The batcher asks it whether a batch should wait for company: with nobody upstream, no request can join.
    """

    def __init__(self) -> None:
        self.count = 0

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        self.count += 1
        try:
            yield
        finally:
            self.count -= 1


@dataclass
class AppState:
    """Everything a request needs; one instance per app, held in the lifespan state under ``"service"``."""

    settings: Settings
    telemetry: Telemetry
    tracer: StageTracer
    registry: ModelRegistry
    batcher: MicroBatcher[DigitRequest, DigitPrediction]
    line_batcher: MicroBatcher[LineRequest, LineReading]
    preprocess_pool: PreprocessPool
    upstream: Upstream
    byte_budget: ByteBudget
    frames: FrameTracker
    accepting: bool = True
    # Set on SIGTERM for the pre-stop drain: readiness says 503 while requests are still served.
    draining: bool = False
    store_watcher: asyncio.Task[None] | None = field(default=None, repr=False)

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
        if self.store_watcher is not None:
            self.store_watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.store_watcher
        await self.batcher.stop()
        await self.line_batcher.stop()
        await self.preprocess_pool.shutdown()
        logger.info("stopped: every accepted request was answered")


async def start_state(settings: Settings, telemetry: Telemetry, tracer: StageTracer) -> AppState:
    """Load, verify and warm the models, then start the batcher and the store watcher."""
    torch.set_num_threads(settings.torch_threads)
    device = select_device(settings.device)
    registry = ModelRegistry(
        ModelStore(settings.model_store_dir),
        device,
        names=settings.models,
        pinned=settings.model_versions,
        warmup_batch_sizes=(1, settings.max_batch_size),
        digit_check=settings.digit_check,
    )
    await registry.reload()
    predictor = BatchPredictor(
        device, max_batch_size=settings.max_batch_size, autocast_fp16=settings.autocast_fp16, telemetry=telemetry
    )
    pool = PreprocessPool(
        settings.preprocess_workers,
        max_waiting=settings.queue_max_size,
        preload=PRELOAD,
        job_timeout_s=settings.preprocess_timeout_s,
    )
    await pool.start()
    upstream = Upstream()
    byte_budget = ByteBudget(settings.max_inflight_bytes)
    batcher: MicroBatcher[DigitRequest, DigitPrediction] = MicroBatcher(
        predictor,
        max_batch_size=settings.max_batch_size,
        max_batch_wait_ms=settings.max_batch_wait_ms,
        queue_max_size=settings.queue_max_size,
        # With no upload being read or decoded, nothing can join the batch: waiting would only add latency.
        more_coming=lambda: upstream.count > 0,
        name="inference",
    )
    batcher.start()
    # Lines get their own batcher (a batch holds one kind of input) under the same limits.
    line_batcher: MicroBatcher[LineRequest, LineReading] = MicroBatcher(
        LineBatchReader(device, telemetry),
        max_batch_size=settings.max_batch_size,
        max_batch_wait_ms=settings.max_batch_wait_ms,
        queue_max_size=settings.queue_max_size,
        more_coming=lambda: upstream.count > 0,
        name="reading",
    )
    line_batcher.start()
    telemetry.track(
        queue_depth=lambda: batcher.queue_depth + line_batcher.queue_depth,
        preprocess_pending=lambda: pool.pending,
        inflight_bytes=lambda: byte_budget.in_use_bytes,
        model_versions=lambda: {name: model.version for name, model in registry.models.models.items()},
    )
    watcher = None
    if settings.reload_interval_s > 0:
        watcher = asyncio.create_task(watch_store(registry, settings.reload_interval_s), name="store-watcher")
    state = AppState(
        settings=settings,
        telemetry=telemetry,
        tracer=tracer,
        registry=registry,
        batcher=batcher,
        line_batcher=line_batcher,
        preprocess_pool=pool,
        upstream=upstream,
        byte_budget=byte_budget,
        frames=FrameTracker(settings.detect_max_streams),
        store_watcher=watcher,
    )
    loaded = [*registry.models.models.values(), *([registry.models.check] if registry.models.check else [])]
    served = ", ".join(f"{model.name} v{model.version}" for model in loaded)
    if served:
        logger.info("serving on %s: %s", device, served)
    else:
        logger.error("no model could be loaded from %s: not ready (see /models)", settings.model_store_dir)
    return state
