"""Liveness and readiness: ready only with verified, warmed models; 503 before that and from shutdown on."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from contract import ModelStore
from service import errors
from service.config import Settings
from service.deps import STATE_KEY
from service.main import create_app
from tests.support.admin import ADMIN
from tests.support.stand_ins import publish
from tests.support.uploads import upload

NOT_READY = {"detail": errors.ServiceUnavailableError.default_detail}


def test_live_returns_200(client: TestClient) -> None:
    response = client.get("/health/live")

    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


def test_ready_returns_200_with_the_served_models_and_versions(client: TestClient) -> None:
    response = client.get("/health/ready")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "models": ["cnn", "lenet5", "mlp"],
        "versions": {"cnn": 1, "lenet5": 1, "mlp": 1},
    }


def test_ready_returns_503_until_a_model_is_loaded(settings: Settings, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "later")
    with TestClient(create_app(settings.model_copy(update={"model_store_dir": store.root}))) as client:
        before = client.get("/health/ready")
        publish(store, "cnn")
        client.post("/models/reload", headers=ADMIN)
        after = client.get("/health/ready")

    assert before.status_code == 503
    assert before.headers["retry-after"] == "1"
    assert before.json() == NOT_READY
    assert after.status_code == 200


def test_ready_returns_503_without_a_running_lifespan(app: FastAPI) -> None:
    response = TestClient(app).get("/health/ready")

    assert response.status_code == 503
    assert response.json() == NOT_READY


def test_shutdown_turns_ready_to_503_and_refuses_predictions(app: FastAPI, digit_png: bytes) -> None:
    with TestClient(app) as client:
        assert client.get("/health/ready").status_code == 200
        state = client.app_state[STATE_KEY]
        client.portal.call(state.stop)  # type: ignore[union-attr]

        ready = client.get("/health/ready")
        prediction = client.post("/predict", files=upload(digit_png))
        live = client.get("/health/live")

    assert ready.status_code == 503
    assert prediction.status_code == 503
    assert prediction.json() == NOT_READY
    assert live.status_code == 200
