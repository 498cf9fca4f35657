"""Request ids and log lines: a well-formed incoming id is kept and echoed, anything else replaced; each log line
carries the id, as text or as JSON with the balancer's field names."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from asgi_correlation_id import correlation_id
from fastapi.testclient import TestClient
from pythonjsonlogger.json import JsonFormatter

from service.config import Settings
from service.logs import AccessFieldsFilter, RequestIdFilter, log_config
from tests.support.uploads import upload

HEX_ID = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("incoming", [HEX_ID, "req-42.retry_1", "9f1c2d3e-0000-4abc-8def-0123456789ab"])
def test_well_formed_request_id_is_echoed_in_header_and_body(
    client: TestClient, digit_png: bytes, incoming: str
) -> None:
    response = client.post("/predict", files=upload(digit_png), headers={"X-Request-ID": incoming})

    assert response.status_code == 200
    assert response.headers["x-request-id"] == incoming
    assert response.json()["request_id"] == incoming


@pytest.mark.parametrize(
    "incoming",
    ["x" * 129, "two words", 'quote"d', "semi;colon", "ünïcode"],
    ids=["long", "space", "quote", "semi", "utf8"],
)
def test_malformed_request_id_is_replaced_by_a_fresh_one(client: TestClient, digit_png: bytes, incoming: str) -> None:
    response = client.post("/predict", files=upload(digit_png), headers={"X-Request-ID": incoming.encode()})

    request_id = response.headers["x-request-id"]
    assert response.json()["request_id"] == request_id
    assert request_id not in (incoming, incoming.encode().decode("latin-1"))
    assert len(request_id) == 32 and int(request_id, 16) >= 0


def test_every_answer_carries_a_request_id_even_errors(client: TestClient) -> None:
    missing = client.post("/predict", content=b"x", headers={"Content-Type": "text/plain"})
    live = client.get("/health/live")

    assert missing.status_code == 422
    assert len(missing.headers["x-request-id"]) == 32
    assert missing.headers["x-request-id"] != live.headers["x-request-id"]


def formatted(log_format: str, record: logging.LogRecord) -> str:
    """``record`` through the ``service`` handler's filters and formatter as ``log_config`` builds them."""
    formatter_config: dict[str, Any] = dict(log_config(Settings(log_format=log_format))["formatters"]["service"])
    factory = formatter_config.pop("()", None)
    formatter = JsonFormatter(**formatter_config) if factory else logging.Formatter(formatter_config["format"])
    for log_filter in (RequestIdFilter(), AccessFieldsFilter()):
        log_filter.filter(record)
    return formatter.format(record)


def access_record() -> logging.LogRecord:
    return logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("1.2.3.4:5", "POST", "/predict", "1.1", 200),
        None,
    )


def test_json_lines_use_the_balancer_log_field_names() -> None:
    token = correlation_id.set(HEX_ID)
    try:
        line = json.loads(formatted("json", access_record()))
    finally:
        correlation_id.reset(token)

    assert line["request_id"] == HEX_ID
    assert (line["client"], line["method"], line["uri"], line["status"]) == ("1.2.3.4:5", "POST", "/predict", 200)
    assert (line["level"], line["logger"]) == ("INFO", "uvicorn.access")
    assert line["time"].endswith("+00:00")


def test_text_lines_carry_the_request_id_and_a_dash_outside_requests() -> None:
    record = logging.LogRecord("service.state", logging.INFO, __file__, 1, "serving", None, None)
    token = correlation_id.set(HEX_ID)
    try:
        inside = formatted("text", record)
    finally:
        correlation_id.reset(token)
    outside = formatted("text", logging.LogRecord("service.state", logging.INFO, __file__, 1, "serving", None, None))

    assert inside.endswith(f"INFO service.state [{HEX_ID}]: serving")
    assert outside.endswith("INFO service.state [-]: serving")
