"""``GET /metrics``: the app's Prometheus collectors in the text exposition format."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.deps import TelemetryDep
from service.errors import ServiceUnavailableError
from service.schemas import error_responses

router = APIRouter(tags=["monitoring"])

_TEXT_FORMAT: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Prometheus text format: requests, latency, batch sizes, queue depth, inference time",
        "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
    }
}


@router.get("/metrics", response_class=Response, responses={**_TEXT_FORMAT, **error_responses(ServiceUnavailableError)})
async def metrics(telemetry: TelemetryDep) -> Response:
    """Request counts and latency by route and status, batch sizes, queue depth and inference time per model."""
    return Response(content=telemetry.render(), media_type=CONTENT_TYPE_LATEST)
