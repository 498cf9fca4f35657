"""The built app: every route documented with its errors and examples, the web page mounted, CORS opt-in."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app

DOCUMENTED_ERRORS = {
    ("/predict", "post"): {"400", "413", "415", "422", "503"},
    ("/models", "get"): {"503"},
    ("/models/{name}", "get"): {"404", "422", "503"},
    ("/models/reload", "post"): {"401", "403", "404", "503"},
    ("/health/ready", "get"): {"503"},
    ("/metrics", "get"): {"503"},
}
# The Open Inference Protocol's routes: {"error": ...} bodies.
DOCUMENTED_OIP_ERRORS = {
    ("/v2/health/ready", "get"): {"503"},
    ("/v2/models/{model_name}", "get"): {"404", "503"},
    ("/v2/models/{model_name}/versions/{model_version}/ready", "get"): {"404", "503"},
    ("/v2/models/{model_name}/infer", "post"): {"400", "404", "413", "415", "422", "503"},
    ("/v2/models/{model_name}/versions/{model_version}/infer", "post"): {"400", "404", "413", "415", "422", "503"},
}


@pytest.fixture
def openapi(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


@pytest.mark.parametrize(
    ("documented", "model", "key"),
    [(DOCUMENTED_ERRORS, "ErrorResponse", "detail"), (DOCUMENTED_OIP_ERRORS, "OipErrorResponse", "error")],
    ids=["ours", "oip"],
)
def test_every_route_documents_its_errors_with_examples(
    openapi: dict[str, Any], documented: dict[tuple[str, str], set[str]], model: str, key: str
) -> None:
    for (path, method), statuses in documented.items():
        responses = openapi["paths"][path][method]["responses"]
        assert statuses <= set(responses), path
        for status in statuses:
            content = responses[status]["content"]["application/json"]
            assert content["schema"] == {"$ref": f"#/components/schemas/{model}"}
            assert all(example["value"][key] for example in content["examples"].values())
        if "503" in statuses:
            assert "Retry-After" in responses["503"]["headers"]


def test_no_route_documents_fastapis_list_shaped_validation_error(openapi: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in openapi["components"]["schemas"]


def test_predict_documents_the_multipart_upload_and_its_answer(openapi: dict[str, Any]) -> None:
    operation = openapi["paths"]["/predict"]["post"]
    schema = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["required"] == ["file"]
    assert schema["properties"]["file"]["format"] == "binary"
    assert {parameter["name"] for parameter in operation["parameters"]} == {"models", "debug"}
    answer = openapi["components"]["schemas"]["PredictionResponse"]
    assert answer["examples"][0]["predictions"][0]["label"] == 7


def test_docs_and_web_page_are_served(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/").headers["content-type"].startswith("text/html")


def test_cors_is_off_by_default(client: TestClient) -> None:
    response = client.get("/health/live", headers={"Origin": "https://elsewhere.example"})

    assert "access-control-allow-origin" not in response.headers


def test_cors_allows_only_the_configured_origins(settings: Settings) -> None:
    configured = settings.model_copy(update={"cors_allow_origins": ["https://digits.example"]})

    with TestClient(create_app(configured)) as client:
        allowed = client.get("/health/live", headers={"Origin": "https://digits.example"})
        other = client.get("/health/live", headers={"Origin": "https://elsewhere.example"})

    assert allowed.headers["access-control-allow-origin"] == "https://digits.example"
    assert "access-control-allow-origin" not in other.headers
