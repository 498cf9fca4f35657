"""Optional OpenTelemetry tracing: the FastAPI request span, and under it one span per stage of a prediction.

Stages (``read_upload``, ``preprocess``, ``queue``, ``inference``) are timed by the route anyway, so they are
recorded after the fact with their measured start and end, under the request's span, and carry the request id.
Off by default; turned on by ``DIGITS_TRACING_ENABLED`` with the ``tracing`` extra installed, exporting over
OTLP/HTTP as the standard ``OTEL_*`` variables configure it (``OTEL_EXPORTER_OTLP_ENDPOINT`` and so on).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import FastAPI

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.trace import Tracer

_INSTRUMENTATION_NAME = "digits.service"


@dataclass(frozen=True)
class Stage:
    """One stage of a request, timed with ``time.perf_counter()``."""

    name: str
    start_s: float
    end_s: float


class StageTracer:
    """Records a request's stages as spans when tracing is on, and does nothing otherwise."""

    def __init__(self) -> None:
        self._provider: TracerProvider | None = None
        self._tracer: Tracer | None = None

    def attach(self, provider: TracerProvider) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer(_INSTRUMENTATION_NAME)

    def record(self, stages: Sequence[Stage], request_id: str) -> None:
        """One span per stage, children of the current (request) span."""
        if self._tracer is None:
            return
        epoch_offset_ns = time.time_ns() - time.perf_counter_ns()
        for stage in stages:
            span = self._tracer.start_span(
                stage.name,
                start_time=epoch_offset_ns + int(stage.start_s * 1e9),
                attributes={"digits.request_id": request_id},
            )
            span.end(end_time=epoch_offset_ns + int(stage.end_s * 1e9))

    def shutdown(self) -> None:
        """Export what is buffered and stop the exporter."""
        if self._provider is not None:
            self._provider.shutdown()


def start_tracing(app: FastAPI, tracer: StageTracer, span_processor: SpanProcessor | None = None) -> None:
    """Instrument ``app`` and ``tracer`` with a tracer provider that sends spans to ``span_processor``.

    The default processor batches spans to the OTLP exporter configured by ``OTEL_*`` variables.
    """
    try:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise RuntimeError("Tracing needs the 'tracing' extra: pip install 'digits[tracing]'.") from exc
    if span_processor is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        span_processor = BatchSpanProcessor(OTLPSpanExporter())
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", "digits")}))
    provider.add_span_processor(span_processor)
    tracer.attach(provider)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
