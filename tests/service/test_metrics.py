"""``GET /metrics``: Prometheus text with request, batch, queue and inference series, per app."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.config import Settings
from service.deps import STATE_KEY
from service.main import create_app
from tests.support.uploads import upload


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_requests_batches_and_inference(client: TestClient, digit_png: bytes) -> None:
    client.post("/predict", files=upload(digit_png))
    client.post("/predict", params={"models": "nope"}, files=upload(digit_png))
    client.get("/no/such/page")

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    values = samples(response.text)
    assert values[("digits_http_requests_total", (("method", "POST"), ("route", "/predict"), ("status", "200")))] == 1
    assert values[("digits_http_requests_total", (("method", "POST"), ("route", "/predict"), ("status", "422")))] == 1
    assert values[("digits_http_requests_total", (("method", "GET"), ("route", "unmatched"), ("status", "404")))] == 1
    assert values[("digits_http_request_duration_seconds_count", (("route", "/predict"),))] == 2
    assert values[("digits_batch_size_count", ())] == 1
    assert values[("digits_batch_size_sum", ())] == 1
    for model in ("cnn", "lenet5", "mlp"):
        assert values[("digits_inference_seconds_count", (("model", model),))] == 1
        assert values[("digits_model_version", (("model", model),))] == 1
    assert values[("digits_queue_depth", ())] == 0
    assert values[("digits_preprocess_pending", ())] == 0


def test_each_app_has_its_own_metrics(app: FastAPI, settings: Settings) -> None:
    with TestClient(app) as first, TestClient(create_app(settings)) as second:
        first.get("/health/live")
        first_values = samples(first.get("/metrics").text)
        second_values = samples(second.get("/metrics").text)

    live = ("digits_http_requests_total", (("method", "GET"), ("route", "/health/live"), ("status", "200")))
    assert first_values[live] == 1
    assert live not in second_values


def test_metrics_cover_stages_confidence_budget_refusals_and_versions(client: TestClient, digit_png: bytes) -> None:
    client.post("/predict", files=upload(digit_png))
    client.get("/openapi.json")
    client.get("/docs")
    pool = client.app_state[STATE_KEY].preprocess_pool
    pool._closed = True  # as after shutdown: the next prediction is refused with 503, reason "not_ready"
    refused = client.post("/predict", files=upload(digit_png))
    pool._closed = False

    values = samples(client.get("/metrics").text)

    assert refused.status_code == 503
    assert values[("digits_refusals_total", (("reason", "not_ready"),))] == 1
    assert values[("digits_preprocess_seconds_count", ())] == 1
    assert values[("digits_queue_wait_seconds_count", ())] == 1
    assert values[("digits_prediction_confidence_count", ())] == 1
    assert values[("digits_inflight_bytes", ())] == 0
    for model in ("cnn", "lenet5", "mlp"):
        assert values[("digits_served_model_info", (("model", model), ("version", "1")))] == 1
    for route in ("/openapi.json", "/docs"):
        assert values[("digits_http_requests_total", (("method", "GET"), ("route", route), ("status", "200")))] == 1
