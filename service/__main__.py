"""``python -m service`` and ``digits-serve``: run the app under uvicorn with the ``DIGITS_*`` settings."""

from __future__ import annotations

import math

import uvicorn

from service.config import get_settings
from service.logs import log_config


def serve(app_factory: str) -> None:
    """Run the app built by ``app_factory`` (``module:function``) with the server options from the settings."""
    settings = get_settings()
    uvicorn.run(
        app_factory,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        log_config=log_config(settings),
        access_log=settings.access_log,
        limit_concurrency=settings.limit_concurrency,
        backlog=settings.backlog,
        http=settings.http_implementation,
        # The stock asyncio loop: uvloop is not a dependency, and this pins what was measured.
        loop="asyncio",
        lifespan="on",
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_s),
    )


def main() -> None:
    serve("service.main:create_app")


if __name__ == "__main__":
    main()
