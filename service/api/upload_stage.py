"""The first half of every route that takes one uploaded image: read it under the byte budget, then prepare it in
the preprocessing pool, timing both. ``/predict`` and ``/read`` differ only in what prepares the image."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from fastapi import Request

from imaging.decoding import DecodeLimits
from service.engine import Batcher
from service.schemas import Timings
from service.state import AppState
from service.uploads import read_upload

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Preparer(Protocol[T_co]):
    """``imaging.digit.prepare_digit`` or ``imaging.lines.prepare_line``."""

    def __call__(self, data: bytes, limits: DecodeLimits, *, with_png: bool = False) -> T_co: ...


@dataclass(frozen=True)
class PreparedUpload(Generic[T]):
    """What ``prepare`` made of the upload, and ``time.perf_counter()`` when the route started, when the upload
    had been read and when it had been prepared."""

    value: T
    started_s: float
    read_s: float
    prepared_s: float

    def timings(self, done_s: float) -> Timings:
        return Timings(
            read_ms=(self.read_s - self.started_s) * 1e3,
            preprocess_ms=(self.prepared_s - self.read_s) * 1e3,
            inference_ms=(done_s - self.prepared_s) * 1e3,
            total_ms=(done_s - self.started_s) * 1e3,
        )


def refuse_when_full(state: AppState, batcher: Batcher[Any, Any]) -> None:
    """Ask every bound before the upload is read (under overload, refusing costs no body bytes) and before the
    models are chosen, so that while the inference process restarts (and no model is listed) the answer says so."""
    state.preprocess_pool.check_intake()
    batcher.check_intake()


async def read_and_prepare(
    request: Request,
    state: AppState,
    prepare: Preparer[T],
    *,
    started_s: float,
    with_png: bool,
) -> PreparedUpload[T]:
    """``prepare(upload, limits, with_png=with_png)`` in the pool, after :func:`refuse_when_full`."""
    with state.upstream.track(), state.byte_budget.reserve() as reservation:
        data = await read_upload(request, state.settings.max_upload_bytes, reservation)
        read_s = time.perf_counter()
        limits = DecodeLimits(max_image_pixels=state.settings.max_image_pixels)
        value = await state.preprocess_pool.run(prepare, data, limits, with_png=with_png)
        del data  # freed now, not after inference: the reservation stops counting it here
        return PreparedUpload(value, started_s, read_s, time.perf_counter())
