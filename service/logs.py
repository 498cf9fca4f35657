"""Logging set-up and request ids: every log line about a request carries its id, as text or as JSON.

A well-formed incoming ``X-Request-ID`` (1 to 128 letters, digits, ``.``, ``_``, ``-``; nginx sends 32 hex digits)
is kept, anything else is replaced by a fresh id; the id goes back in the ``X-Request-ID`` response header and in
the prediction's ``request_id``. With ``DIGITS_LOG_FORMAT=json`` each line is one JSON object whose field names
are those of the balancer's access log (``deploy/nginx/nginx.conf``): ``time``, ``request_id``, and for access
lines ``client``, ``method``, ``uri`` and ``status``.
"""

from __future__ import annotations

import copy
import logging
import re
import uuid
from typing import Any

from asgi_correlation_id import correlation_id
from uvicorn.config import LOGGING_CONFIG

from service.config import Settings

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
_JSON_FIELDS = "%(levelname)s %(name)s %(message)s %(request_id)s"
_JSON_RENAMES = {"levelname": "level", "name": "logger"}


def is_valid_request_id(value: str) -> bool:
    """A request id safe to log and echo: bounded length, no spaces, quotes or control characters."""
    return _REQUEST_ID.fullmatch(value) is not None


def new_request_id() -> str:
    """32 hex digits, the form of nginx's ``$request_id``."""
    return uuid.uuid4().hex


def current_request_id() -> str:
    """The id of the request being handled (a fresh one outside a request, which never happens in a route)."""
    return correlation_id.get() or new_request_id()


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on each record as ``request_id`` (``-`` outside a request, as nginx logs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = correlation_id.get() or "-"
        return True


class AccessFieldsFilter(logging.Filter):
    """Names uvicorn's access-log arguments as the balancer's log does: ``client``, ``method``, ``uri``, ``status``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) == 5:
            record.client, record.method, record.uri, _, record.status = record.args
        return True


def _formatter(log_format: str, text_format: str) -> dict[str, Any]:
    if log_format == "json":
        return {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": _JSON_FIELDS,
            "rename_fields": _JSON_RENAMES,
            # ISO 8601 in UTC, like nginx's $time_iso8601 (with microseconds).
            "timestamp": "time",
        }
    return {"format": text_format}


def log_config(settings: Settings) -> dict[str, Any]:
    """uvicorn's logging set-up plus the service's own loggers, in the chosen format, so worker processes get both."""
    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {
        "request_id": {"()": RequestIdFilter},
        "access_fields": {"()": AccessFieldsFilter},
    }
    config["formatters"]["service"] = _formatter(settings.log_format, _TEXT_FORMAT)
    if settings.log_format == "json":
        config["formatters"]["default"] = _formatter("json", "")
        config["formatters"]["access"] = _formatter("json", "")
    config["handlers"]["service"] = {
        "class": "logging.StreamHandler",
        "formatter": "service",
        "stream": "ext://sys.stderr",
    }
    for handler in config["handlers"].values():
        handler["filters"] = ["request_id", "access_fields"]
    level = settings.log_level.upper()
    for name in ("service", "contract", "imaging", "asgi_correlation_id"):
        config["loggers"][name] = {"handlers": ["service"], "level": level, "propagate": False}
    return config
