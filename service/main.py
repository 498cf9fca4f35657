"""Builds the FastAPI app: routers, error handler, request-id, metrics and CORS middleware, optional tracing, and
the lifespan. Nothing else. ``/docs`` (Swagger UI) is served from assets bundled with ``fastapi-offline``, so the
documentation works on a host without internet access (no ReDoc: its page fetches a logo from a CDN).

No model is loaded at import: the lifespan loads, verifies and warms the models, starts the batcher, and on
shutdown stops intake and drains the queue (after a readiness drain on SIGTERM, see ``service.shutdown``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline

from service.api import detect, health, metrics, models, predict, read, ui, v2
from service.config import Settings, get_settings
from service.deps import STATE_KEY
from service.errors import install_error_handler
from service.gc_tuning import server_gc
from service.logs import REQUEST_ID_HEADER, is_valid_request_id, new_request_id
from service.shutdown import die_with_parent, drain_before_sigterm
from service.state import AppState, start_state
from service.telemetry import MetricsMiddleware, Telemetry
from service.tracing import StageTracer, start_tracing

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor

API_VERSION = "1.0.0"


def create_app(settings: Settings | None = None, *, span_processor: SpanProcessor | None = None) -> FastAPI:
    """The service app for ``settings`` (default: from ``DIGITS_*`` environment variables).

    Traces are recorded when ``settings.tracing_enabled`` (exported over OTLP as the ``OTEL_*`` variables say) or
    when a ``span_processor`` is given (tests, embedding); both need the ``tracing`` extra.
    """
    settings = settings or get_settings()
    telemetry = Telemetry()
    tracer = StageTracer()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[dict[str, AppState]]:
        if settings.engine_socket is not None:
            die_with_parent()
        state = await start_state(settings, telemetry, tracer)
        try:
            with server_gc(), drain_before_sigterm(settings.shutdown_drain_s, state.begin_drain):
                yield {STATE_KEY: state}
        finally:
            await state.stop()
            tracer.shutdown()

    app = FastAPIOffline(
        redoc_url=None,
        title="Handwritten digit recognition",
        summary="Classifies a handwritten digit in an uploaded image with several models and their ensemble.",
        version=API_VERSION,
        lifespan=lifespan,
    )
    install_error_handler(app, telemetry.count_refusal)
    app.add_middleware(MetricsMiddleware, telemetry=telemetry)
    if settings.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=[REQUEST_ID_HEADER],
        )
    # Outermost of the service's middleware: every log line and span of the request, errors included, has its id.
    app.add_middleware(
        CorrelationIdMiddleware,
        header_name=REQUEST_ID_HEADER,
        generator=new_request_id,
        validator=is_valid_request_id,
    )
    for router in (
        predict.router,
        read.router,
        detect.router,
        models.router,
        health.router,
        metrics.router,
        v2.router,
        ui.router,
    ):
        app.include_router(router)
    if settings.tracing_enabled or span_processor is not None:
        start_tracing(app, tracer, span_processor)
    return app
