"""The inference engine of one device: the model registry, the digit and line batchers, the store watcher, and the
newest frame of each camera stream (which must be one per host, whichever front end a frame reaches).

Routes see the engine through two small interfaces, :class:`Registry` and :class:`Batcher`, so the same routes
serve whether the engine runs in the front end's own process (:func:`start_engine`, one process serving HTTP and
inference) or in a separate inference process that several front ends share (``service.engine_client``).

``more_coming`` tells the batchers whether an upload is still being read or prepared somewhere, so that a batch
waits for company only when company can come (see ``service.batching``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import torch

from contract import ModelStore
from contract.device import select_device
from service.batching import MicroBatcher
from service.config import Settings
from service.frames import FrameTracker
from service.inference import BatchPredictor, DigitPrediction, DigitRequest
from service.reading import LineBatchReader, LineReading, LineRequest
from service.registry import ModelChange, ModelRegistry, ModelSet, ModelStatus, watch_store
from service.telemetry import Telemetry

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
T_contra = TypeVar("T_contra", contravariant=True)
R_co = TypeVar("R_co", covariant=True)


class Batcher(Protocol[T_contra, R_co]):
    """What a route needs from a batcher: bounds to check before reading an upload, and submission."""

    @property
    def running(self) -> bool: ...

    @property
    def queue_depth(self) -> int: ...

    @property
    def queue_max_size(self) -> int: ...

    def check_intake(self, count: int = 1) -> None: ...

    async def submit(self, item: T_contra) -> R_co: ...

    async def submit_many(self, items: Sequence[T_contra]) -> Sequence[R_co]: ...


class Registry(Protocol):
    """What a route needs from the registry: the served snapshot, what was refused and why, and a reload."""

    @property
    def device(self) -> torch.device | str: ...

    @property
    def models(self) -> ModelSet: ...

    @property
    def statuses(self) -> Mapping[str, ModelStatus]: ...

    async def reload(self) -> list[ModelChange]: ...


@dataclass
class Engine:
    """The registry and batchers of one device, started by :func:`start_engine`."""

    registry: ModelRegistry
    batcher: MicroBatcher[DigitRequest, DigitPrediction]
    line_batcher: MicroBatcher[LineRequest, LineReading]
    frames: FrameTracker
    store_watcher: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def queue_depth(self) -> int:
        return self.batcher.queue_depth + self.line_batcher.queue_depth

    async def is_newest(self, stream: str, frame: int, *, admit: bool) -> bool:
        """Whether ``frame`` is still the newest of camera ``stream`` (with ``admit``: recorded as seen)."""
        return self.frames.admit(stream, frame) if admit else self.frames.is_current(stream, frame)

    async def stop(self) -> None:
        """Stop watching the store, finish every queued item, then stop the inference threads."""
        if self.store_watcher is not None:
            self.store_watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.store_watcher
        await self.batcher.stop()
        await self.line_batcher.stop()


async def start_engine(
    settings: Settings,
    telemetry: Telemetry,
    more_coming: Callable[[], bool],
    on_reload: Callable[[list[ModelChange]], None] | None = None,
) -> Engine:
    """Load, verify and warm the models, then start both batchers and, if configured, the store watcher.

    ``on_reload`` is called after every periodic refresh (the inference process tells its front ends).
    """
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

    def batcher(process_batch: Callable[[Sequence[T]], Sequence[R]], name: str) -> MicroBatcher[T, R]:
        started: MicroBatcher[T, R] = MicroBatcher(
            process_batch,
            max_batch_size=settings.max_batch_size,
            max_batch_wait_ms=settings.max_batch_wait_ms,
            queue_max_size=settings.queue_max_size,
            more_coming=more_coming,
            name=name,
        )
        started.start()
        return started

    predictor = BatchPredictor(
        device, max_batch_size=settings.max_batch_size, autocast_fp16=settings.autocast_fp16, telemetry=telemetry
    )
    # Lines get their own batcher (a batch holds one kind of input) under the same limits.
    engine = Engine(
        registry=registry,
        batcher=batcher(predictor, "inference"),
        line_batcher=batcher(LineBatchReader(device, telemetry), "reading"),
        frames=FrameTracker(settings.detect_max_streams),
    )
    if settings.reload_interval_s > 0:
        engine.store_watcher = asyncio.create_task(
            watch_store(registry, settings.reload_interval_s, on_reload), name="store-watcher"
        )
    served = ", ".join(f"{model.name} v{model.version}" for model in registry.models.models.values())
    if served:
        logger.info("serving on %s: %s", device, served)
    else:
        logger.error("no model could be loaded from %s: not ready (see /models)", settings.model_store_dir)
    return engine
