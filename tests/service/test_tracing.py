"""Tracing: a prediction's request span holds one span per stage, in order, each with the request id."""

from __future__ import annotations

from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service.config import Settings
from service.main import create_app
from tests.support.uploads import upload

STAGES = ["read_upload", "preprocess", "queue", "inference"]


def test_prediction_stages_are_spans_under_the_request_span(settings: Settings, digit_png: bytes) -> None:
    exporter = InMemorySpanExporter()

    with TestClient(create_app(settings, span_processor=SimpleSpanProcessor(exporter))) as client:
        response = client.post("/predict", files=upload(digit_png), headers={"X-Request-ID": "trace-me-1"})
    spans = exporter.get_finished_spans()

    assert response.status_code == 200
    request_span = next(span for span in spans if span.name == "POST /predict" and span.parent is None)
    stages = sorted((span for span in spans if span.name in STAGES), key=lambda span: span.start_time or 0)
    assert [span.name for span in stages] == STAGES
    for span in stages:
        assert span.parent is not None and request_span.context is not None
        assert span.parent.span_id == request_span.context.span_id
        assert span.attributes == {"digits.request_id": "trace-me-1"}
        assert span.start_time is not None and span.end_time is not None
        assert span.start_time <= span.end_time
    for earlier, later in zip(stages, stages[1:], strict=False):
        assert earlier.end_time == later.start_time
    assert request_span.resource.attributes["service.name"] == "digits"
