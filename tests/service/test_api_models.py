"""``/models``: manifests of the served models, refusals with reasons, and hot reload through the API."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from contract import MODEL_FILE, ModelStore
from service import errors
from service.config import Settings
from service.main import create_app
from tests.support.admin import ADMIN
from tests.support.stand_ins import FixedLogits, publish
from tests.support.uploads import upload

POLL_TIMEOUT_S = 5.0


def tamper(store: ModelStore, name: str, version: int) -> None:
    path = store.version_dir(name, version) / MODEL_FILE
    path.write_bytes(path.read_bytes() + b"\0")


def test_models_lists_every_served_model_with_its_manifest(client: TestClient, store: ModelStore) -> None:
    response = client.get("/models")

    assert response.status_code == 200
    body = response.json()
    assert body["device"] == "cpu"
    assert body["unavailable"] == []
    assert [model["name"] for model in body["models"]] == ["cnn", "lenet5", "mlp"]
    for model in body["models"]:
        manifest = store.read_manifest(model["name"], 1)
        assert model["version"] == 1
        assert model["state"] == "serving"
        assert model["sha256"] == manifest.sha256
        assert model["parameters"] == manifest.parameters
        assert model["input"]["dims"] == [1, 28, 28]
        assert model["metrics"] == {"test_accuracy": 0.5}
        assert model["training_config"] == {"seed": 0}
        assert model["temperature"] == manifest.temperature


def test_model_by_name_returns_its_manifest(client: TestClient) -> None:
    response = client.get("/models/lenet5")

    assert response.status_code == 200
    assert response.json()["name"] == "lenet5"
    assert response.json()["ensemble_weight"] == 1.0


@pytest.mark.parametrize("name", ["resnet", "%2E%2E", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "mlp%00"])
def test_unknown_or_path_like_model_name_returns_404(client: TestClient, name: str) -> None:
    response = client.get(f"/models/{name}")

    assert response.status_code == 404
    assert response.json()["detail"] in {errors.ModelNotFoundHTTPError.default_detail, "Not Found"}


def test_refused_models_are_reported_with_their_reasons(store: ModelStore, settings: Settings) -> None:
    publish(store, "cnn")
    tamper(store, "cnn", 2)
    pinned = settings.model_copy(update={"model_versions": {"mlp": 4}})

    with TestClient(create_app(pinned)) as client:
        body = client.get("/models").json()
        missing = client.get("/models/mlp")

    assert body["unavailable"] == [
        {"name": "mlp", "requested_version": 4, "problems": ["model 'mlp' has no version 4; available: [1]"]}
    ]
    cnn = next(model for model in body["models"] if model["name"] == "cnn")
    assert (cnn["version"], cnn["state"]) == (1, "fallback")
    assert cnn["problems"] == ["cnn v2: model.pt does not match the sha256 in its manifest"]
    assert missing.status_code == 404


def test_reload_swaps_in_a_new_version_without_a_restart(
    client: TestClient, store: ModelStore, digit_png: bytes
) -> None:
    publish(store, "mlp", FixedLogits([0.0, 0.0, 0.0, 6.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]))

    response = client.post("/models/reload", headers=ADMIN)

    assert response.status_code == 200
    assert response.json()["changes"] == [{"name": "mlp", "old_version": 1, "new_version": 2}]
    assert client.get("/models/mlp").json()["version"] == 2
    prediction = client.post("/predict", params={"models": "mlp"}, files=upload(digit_png)).json()
    assert (prediction["predictions"][0]["version"], prediction["predictions"][0]["label"]) == (2, 3)


def test_reload_with_a_broken_new_version_keeps_serving_the_old_one(client: TestClient, store: ModelStore) -> None:
    publish(store, "mlp")
    tamper(store, "mlp", 2)

    response = client.post("/models/reload", headers=ADMIN)

    assert response.status_code == 200
    assert response.json()["changes"] == []
    mlp = client.get("/models/mlp").json()
    assert (mlp["version"], mlp["state"]) == (1, "fallback")


def test_store_is_polled_when_an_interval_is_set(store: ModelStore, settings: Settings) -> None:
    polling = settings.model_copy(update={"reload_interval_s": 0.05})

    with TestClient(create_app(polling)) as client:
        publish(store, "cnn")
        deadline = time.monotonic() + POLL_TIMEOUT_S
        while client.get("/models/cnn").json()["version"] != 2 and time.monotonic() < deadline:
            time.sleep(0.02)

        assert client.get("/models/cnn").json()["version"] == 2


def test_reload_path_advertises_post_only(client: TestClient) -> None:
    response = client.put("/models/reload")

    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
