"""``POST /read``: an image of a handwritten number through line normalisation, the line batcher and the reader."""

from __future__ import annotations

import base64
import time
from typing import Annotated

from fastapi import APIRouter, Query, Request

from imaging import errors as imaging_errors
from imaging.decoding import DecodeLimits
from imaging.lines import prepare_line
from service import errors
from service.deps import StateDep
from service.logs import current_request_id
from service.reading import LineReading, LineRequest
from service.registry import ModelSet
from service.schemas import (
    UPLOAD_REQUEST_BODY,
    ReadDigitResult,
    ReaderInfo,
    ReadResponse,
    Timings,
    error_responses,
)
from service.uploads import read_upload

router = APIRouter(tags=["reading"])

LineDebugQuery = Annotated[
    bool, Query(description="also return the normalised line the reader saw and each digit's 28x28, as base64 PNGs")
]
_NO_LINE_DETAIL = "No digits found in the image. Upload an image with a clearly visible handwritten number."


def select_reader(models: ModelSet) -> str:
    """The served line reader (the first by name when the store holds several); 503 when none is served."""
    readers = models.readers()
    if not readers:
        raise errors.ServiceUnavailableError("No model that reads numbers is loaded. Try again later.")
    return readers[0]


def _b64(png: bytes | None) -> str | None:
    return base64.b64encode(png).decode("ascii") if png is not None else None


def _to_response(request_id: str, reading: LineReading, line_png: bytes | None, timings: Timings) -> ReadResponse:
    return ReadResponse(
        request_id=request_id,
        text=reading.text,
        confidence=reading.confidence,
        digits=[
            ReadDigitResult(
                label=digit.label,
                confidence=digit.confidence,
                probabilities=digit.probabilities,
                box=[round(value, 1) for value in digit.box],
                image_png_base64=_b64(digit.png),
            )
            for digit in reading.digits
        ],
        model=ReaderInfo(name=reading.reader, version=reading.version),
        batch_size=reading.batch_size,
        timings_ms=timings,
        line_png_base64=_b64(line_png),
    )


@router.post(
    "/read",
    response_model=ReadResponse,
    response_model_exclude_none=True,
    responses=error_responses(*errors.UPLOAD_ERRORS),
    openapi_extra={"requestBody": UPLOAD_REQUEST_BODY},
)
async def read(request: Request, state: StateDep, debug: LineDebugQuery = False) -> ReadResponse:
    """Read the handwritten number (1 to 12 digits on one line) in an uploaded image."""
    started = time.perf_counter()
    snapshot = state.registry.models
    reader = select_reader(snapshot)
    state.preprocess_pool.check_intake()
    state.line_batcher.check_intake()
    with state.upstream.track(), state.byte_budget.reserve() as reservation:
        data = await read_upload(request, state.settings.max_upload_bytes, reservation)
        received = time.perf_counter()
        limits = DecodeLimits(max_image_pixels=state.settings.max_image_pixels)
        try:
            prepared = await state.preprocess_pool.run(prepare_line, data, limits, with_png=debug)
        except imaging_errors.NoDigitFoundError:
            raise errors.NoDigitFoundError(_NO_LINE_DETAIL) from None
        del data  # freed now, not after inference: the reservation stops counting it here
        normalised = time.perf_counter()
    reading = await state.line_batcher.submit(
        LineRequest(line=prepared.line, models=snapshot, reader=reader, with_digit_pngs=debug)
    )
    done = time.perf_counter()
    timings = Timings(
        read_ms=(received - started) * 1e3,
        preprocess_ms=(normalised - received) * 1e3,
        inference_ms=(done - normalised) * 1e3,
        total_ms=(done - started) * 1e3,
    )
    return _to_response(current_request_id(), reading, prepared.png, timings)
