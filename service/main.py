"""Builds the FastAPI app: routers, error handler, metrics and CORS middleware, and the lifespan. Nothing else.

No model is loaded at import: the lifespan loads, verifies and warms the models, starts the batcher, and on
shutdown stops intake and drains the queue (after a readiness drain on SIGTERM, see ``service.shutdown``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service.api import health, metrics, models, predict, ui, v2
from service.config import Settings, get_settings
from service.deps import STATE_KEY
from service.errors import install_error_handler
from service.gc_tuning import server_gc
from service.shutdown import drain_before_sigterm
from service.state import AppState, start_state
from service.telemetry import MetricsMiddleware, Telemetry

API_VERSION = "1.0.0"


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service app for ``settings`` (default: from ``DIGITS_*`` environment variables)."""
    settings = settings or get_settings()
    telemetry = Telemetry()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[dict[str, AppState]]:
        state = await start_state(settings, telemetry)
        try:
            with server_gc(), drain_before_sigterm(settings.shutdown_drain_s, state.begin_drain):
                yield {STATE_KEY: state}
        finally:
            await state.stop()

    app = FastAPI(
        title="Handwritten digit recognition",
        summary="Classifies a handwritten digit in an uploaded image with several models and their ensemble.",
        version=API_VERSION,
        lifespan=lifespan,
    )
    install_error_handler(app)
    app.add_middleware(MetricsMiddleware, telemetry=telemetry)
    if settings.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
        )
    for router in (predict.router, models.router, health.router, metrics.router, v2.router, ui.router):
        app.include_router(router)
    return app
