"""``POST /read``: an image of a handwritten number through line normalisation, the line batcher and the reader."""

from __future__ import annotations

import base64
import time
from typing import Annotated

from fastapi import APIRouter, Query, Request

from imaging import errors as imaging_errors
from imaging.lines import prepare_line
from service import errors
from service.api.upload_stage import read_and_prepare, refuse_when_full
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


def to_base64(png: bytes | None) -> str | None:
    return base64.b64encode(png).decode("ascii") if png is not None else None


def digit_results(reading: LineReading) -> list[ReadDigitResult]:
    """A reading's digits as the API answers them (``/read`` and ``/detect`` alike)."""
    return [
        ReadDigitResult(
            label=digit.label,
            confidence=digit.confidence,
            probabilities=digit.probabilities,
            box=[round(value, 1) for value in digit.box],
            image_png_base64=to_base64(digit.png),
        )
        for digit in reading.digits
    ]


def _to_response(request_id: str, reading: LineReading, line_png: bytes | None, timings: Timings) -> ReadResponse:
    return ReadResponse(
        request_id=request_id,
        text=reading.text,
        confidence=reading.confidence,
        digits=digit_results(reading),
        model=ReaderInfo(name=reading.reader, version=reading.version),
        batch_size=reading.batch_size,
        timings_ms=timings,
        line_png_base64=to_base64(line_png),
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
    refuse_when_full(state, state.line_batcher)
    snapshot = state.registry.models
    reader = select_reader(snapshot)
    try:
        upload = await read_and_prepare(request, state, prepare_line, started_s=started, with_png=debug)
    except imaging_errors.NoDigitFoundError:
        raise errors.NoDigitFoundError(_NO_LINE_DETAIL) from None
    prepared = upload.value
    reading = await state.line_batcher.submit(
        LineRequest(line=prepared.line, models=snapshot, reader=reader, with_digit_pngs=debug)
    )
    return _to_response(current_request_id(), reading, prepared.png, upload.timings(time.perf_counter()))
