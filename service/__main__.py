"""``python -m service`` and ``digits-serve``: run the app under uvicorn with the ``DIGITS_*`` settings."""

from __future__ import annotations

import copy
import math
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from service.config import Settings, get_settings


def log_config(settings: Settings) -> dict[str, Any]:
    """uvicorn's logging setup plus the service's own loggers, so worker processes get both."""
    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["service"] = {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    config["handlers"]["service"] = {
        "class": "logging.StreamHandler",
        "formatter": "service",
        "stream": "ext://sys.stderr",
    }
    level = settings.log_level.upper()
    for name in ("service", "contract"):
        config["loggers"][name] = {"handlers": ["service"], "level": level, "propagate": False}
    return config


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
