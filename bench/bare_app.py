"""The ceiling of the HTTP stack: the service's own upload reading and image decoding, and no model, behind
both routes the benchmark sends uploads to (``/predict`` and ``/read``).

Served by the same uvicorn options as the service (``service.supervisor.serve``), so the benchmark's ratio
"service / bare endpoint" measures what batching, preprocessing and inference cost on top of HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

from imaging.decoding import DecodeLimits, decode_image
from service.config import get_settings
from service.gc_tuning import server_gc
from service.inflight import ByteBudget
from service.uploads import read_upload


def _decode(data: bytes, limits: DecodeLimits) -> tuple[int, int]:
    image = decode_image(data, limits)
    image.load()
    return image.size


def create_app() -> FastAPI:
    settings = get_settings()
    limits = DecodeLimits(max_image_pixels=settings.max_image_pixels)
    budget = ByteBudget(settings.max_inflight_bytes)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        with server_gc():  # the service's own process setting, so the two stacks stay comparable
            yield

    app = FastAPI(title="bare endpoint", lifespan=lifespan)

    @app.post("/predict")
    @app.post("/read")
    async def predict(request: Request) -> dict[str, int]:
        with budget.reserve() as reservation:
            data = await read_upload(request, settings.max_upload_bytes, reservation)
            width, height = await run_in_threadpool(_decode, data, limits)
        return {"width": width, "height": height}

    @app.get("/health/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    return app


if __name__ == "__main__":
    from service.supervisor import serve

    serve("bench.bare_app:create_app", with_inference_process=False)
