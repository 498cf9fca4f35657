"""``POST /predict``: one uploaded image through preprocessing, the micro-batcher and every selected model."""

from __future__ import annotations

import base64
import time
from typing import Annotated

import torch
from fastapi import APIRouter, Query, Request

from imaging.digit import prepare_digit
from service import errors
from service.api.upload_stage import read_and_prepare, refuse_when_full
from service.deps import StateDep
from service.inference import CheckResult, DigitPrediction, DigitRequest
from service.logs import current_request_id
from service.registry import ModelSet
from service.schemas import (
    UPLOAD_REQUEST_BODY,
    DigitCheck,
    EnsemblePrediction,
    ModelPrediction,
    PredictionResponse,
    Timings,
    error_responses,
)
from service.state import AppState
from service.tracing import Stage

router = APIRouter(tags=["prediction"])

ModelsQuery = Annotated[
    str | None,
    Query(description="comma-separated model names; default: every served model", examples=["mlp,lenet5,cnn"]),
]
DebugQuery = Annotated[bool, Query(description="also return the 28x28 image the models saw, as a base64 PNG")]


def select_models(models: ModelSet, query: str | None) -> tuple[str, ...]:
    """The requested digit classifiers in request order (duplicates dropped), or every served classifier."""
    classifiers = models.classifiers()
    if not classifiers:
        raise errors.ServiceUnavailableError()
    requested = tuple(dict.fromkeys(name.strip() for name in (query or "").split(",") if name.strip()))
    if not requested:
        return tuple(classifiers)
    if any(name not in classifiers for name in requested):
        raise errors.UnknownModelError()
    return requested


def _digit_check(check: CheckResult | None) -> DigitCheck | None:
    if check is None:
        return None
    return DigitCheck.model_validate(
        {
            "one_digit": check.one_digit,
            "reason": check.reason,
            "score": check.score,
            "threshold": check.threshold,
            "model": check.name,
            "version": check.version,
        }
    )


def _to_response(
    request_id: str, prediction: DigitPrediction, png: bytes | None, timings: Timings
) -> PredictionResponse:
    ensemble = prediction.ensemble
    return PredictionResponse(
        request_id=request_id,
        predictions=[
            ModelPrediction(
                model=output.name,
                version=output.version,
                label=output.result.label,
                confidence=output.result.confidence,
                probabilities=output.result.probabilities,
            )
            for output in prediction.outputs
        ],
        ensemble=EnsemblePrediction(
            label=ensemble.label,
            confidence=ensemble.confidence,
            probabilities=ensemble.probabilities,
            models=[output.name for output in prediction.outputs],
        ),
        digit_check=_digit_check(prediction.check),
        batch_size=prediction.batch_size,
        timings_ms=timings,
        image_png_base64=base64.b64encode(png).decode("ascii") if png is not None else None,
    )


@router.post(
    "/predict",
    response_model=PredictionResponse,
    response_model_exclude_none=True,
    responses=error_responses(*errors.UPLOAD_ERRORS, errors.UnknownModelError),
    openapi_extra={"requestBody": UPLOAD_REQUEST_BODY},
)
async def predict(
    request: Request, state: StateDep, models: ModelsQuery = None, debug: DebugQuery = False
) -> PredictionResponse:
    """Classify the handwritten digit in an uploaded image with each model and the ensemble; say if it is one digit."""
    # One dependency, not one per collaborator: FastAPI's per-request dependency solving costs about
    # 60 us per alias, a few per cent of this route's whole budget.
    started = time.perf_counter()
    refuse_when_full(state, state.batcher)
    # One snapshot for the whole request: a hot reload meanwhile cannot change or mix its versions.
    snapshot = state.registry.models
    selected = select_models(snapshot, models)
    upload = await read_and_prepare(request, state, prepare_digit, started_s=started, with_png=debug)
    digit = upload.value
    prediction = await state.batcher.submit(
        DigitRequest(image=torch.from_numpy(digit.pixels), models=snapshot, selected=selected)
    )
    done = time.perf_counter()
    request_id = current_request_id()
    _observe(state, prediction, request_id, (started, upload.read_s, upload.prepared_s, done))
    return _to_response(request_id, prediction, digit.png, upload.timings(done))


def _observe(
    state: AppState, prediction: DigitPrediction, request_id: str, times: tuple[float, float, float, float]
) -> None:
    """Stage metrics and spans of one answered prediction (``times``: started, read, prepared, done)."""
    started, read, prepared, done = times
    batch_started = prediction.batch_started_s
    telemetry = state.telemetry
    telemetry.preprocess_seconds.observe(prepared - read)
    telemetry.queue_wait_seconds.observe(max(0.0, batch_started - prepared))
    telemetry.confidence.observe(prediction.ensemble.confidence)
    state.tracer.record(
        [
            Stage("read_upload", started, read),
            Stage("preprocess", read, prepared),
            Stage("queue", prepared, batch_started),
            Stage("inference", batch_started, done),
        ],
        request_id,
    )
