"""``POST /detect``: every handwritten number in a camera frame or a photo of a page, found and read.

The page is prepared in the preprocessing pool (:func:`imaging.detection.prepare_page` proposes lines of ink),
every candidate goes through ``/read``'s line batcher and reader (its glyphs through the digit check), and a
candidate is a number when the reader's best path probability reaches ``DIGITS_DETECT_MIN_PATH_PROBABILITY`` and
its glyphs' digit likeness ``DIGITS_DETECT_MIN_DIGIT_LIKENESS`` (:class:`NumberRule`). The rule thresholds the
path probability rather than the calibrated confidence the answer reports: the two rank candidates alike, and the
rule was chosen on the former. Frames of a camera stream (``stream``
and ``frame``) that a newer frame has overtaken are answered 409 without work (see :mod:`service.frames`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Query, Request

from imaging.detection import prepare_page
from service import errors
from service.api.read import digit_results, select_reader, to_base64
from service.api.upload_stage import read_and_prepare, refuse_when_full
from service.deps import StateDep
from service.logs import current_request_id
from service.reading import LineRequest
from service.schemas import UPLOAD_REQUEST_BODY, DetectedNumber, DetectResponse, ReaderInfo, error_responses
from service.state import AppState

router = APIRouter(tags=["reading"])

StreamQuery = Annotated[
    str | None,
    Query(
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="a camera stream's id, chosen by the client; with 'frame', a frame that a newer frame of the "
        "same stream has overtaken is answered 409 without being read",
        examples=["phone-7f3a"],
    ),
]
FrameQuery = Annotated[
    int | None, Query(ge=0, description="the frame's number within its stream, counting upwards", examples=[17])
]
DetectDebugQuery = Annotated[
    bool, Query(description="also return the ink the detector separated and each read digit's 28x28, as base64 PNGs")
]


@dataclass(frozen=True)
class NumberRule:
    """When a candidate's reading is a number: some digits, read on a best path at least ``min_path_probability``
    probable, whose glyphs the digit check finds at least ``min_digit_likeness`` digit-like (not letters; passed
    when no check is served)."""

    min_path_probability: float
    min_digit_likeness: float

    def accepts(self, text: str, path_probability: float, digit_likeness: float | None) -> bool:
        likeness_ok = digit_likeness is None or digit_likeness >= self.min_digit_likeness
        return bool(text) and path_probability >= self.min_path_probability and likeness_ok


async def _check_frame(state: AppState, stream: str | None, frame: int | None, *, admit: bool) -> None:
    """409 for a frame a newer one of its stream has overtaken; frames count only when both values are given."""
    if stream is not None and frame is not None and not await state.engine.is_newest(stream, frame, admit=admit):
        raise errors.StaleFrameError()


@router.post(
    "/detect",
    response_model=DetectResponse,
    response_model_exclude_none=True,
    responses=error_responses(*errors.UPLOAD_ERRORS, errors.StaleFrameError),
    openapi_extra={"requestBody": UPLOAD_REQUEST_BODY},
)
async def detect(
    request: Request,
    state: StateDep,
    stream: StreamQuery = None,
    frame: FrameQuery = None,
    debug: DetectDebugQuery = False,
) -> DetectResponse:
    """Find and read every handwritten number in an image (a camera frame or a photo of a page)."""
    started = time.perf_counter()
    refuse_when_full(state, state.line_batcher)
    snapshot = state.registry.models
    reader = select_reader(snapshot)
    await _check_frame(state, stream, frame, admit=True)
    upload = await read_and_prepare(request, state, prepare_page, started_s=started, with_png=debug)
    await _check_frame(state, stream, frame, admit=False)
    page = upload.value
    requests = [
        LineRequest(line=c.line, models=snapshot, reader=reader, with_digit_pngs=debug, glyphs=c.glyphs)
        for c in page.candidates
    ]
    rule = NumberRule(state.settings.detect_min_path_probability, state.settings.detect_min_digit_likeness)
    readings = await state.line_batcher.submit_many(requests) if requests else []
    loaded = snapshot[reader]
    return DetectResponse(
        request_id=current_request_id(),
        numbers=[
            DetectedNumber(
                text=reading.text,
                confidence=reading.confidence,
                box=[round(value, 1) for value in candidate.box],
                digits=digit_results(reading),
            )
            for candidate, reading in zip(page.candidates, readings, strict=True)
            if rule.accepts(reading.text, reading.path_probability, reading.digit_likeness)
        ],
        candidates=len(page.candidates),
        model=ReaderInfo(name=loaded.name, version=loaded.version),
        frame=frame,
        timings_ms=upload.timings(time.perf_counter()),
        ink_png_base64=to_base64(page.png),
    )
