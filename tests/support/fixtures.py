"""Fixtures shared by the service and reliability tests (imported by their ``conftest.py``): a tiny store of
stand-in models, settings that point at it, the app and a ``TestClient`` running its lifespan."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from contract import ModelStore
from service.config import Settings
from service.main import create_app
from tests.support.admin import ADMIN_TOKEN
from tests.support.stand_ins import MODEL_NAMES, publish
from tests.support.uploads import draw_seven, png_bytes

# Star-imported by the conftest of each folder that uses them (pytest finds fixtures by name in a conftest).
__all__ = ["_no_digits_environment", "app", "client", "digit_png", "pristine_store", "settings", "store"]


@pytest.fixture(scope="session")
def pristine_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Version 1 of each stand-in model, built once per session; tests get a copy."""
    store = ModelStore(tmp_path_factory.mktemp("pristine") / "store")
    for name in MODEL_NAMES:
        publish(store, name)
    return store.root


@pytest.fixture
def store(pristine_store: Path, tmp_path: Path) -> ModelStore:
    return ModelStore(Path(shutil.copytree(pristine_store, tmp_path / "store")))


@pytest.fixture(autouse=True)
def _no_digits_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the test alone, never from ``DIGITS_*`` variables of the shell running pytest."""
    for key in list(os.environ):
        if key.upper().startswith("DIGITS_"):
            monkeypatch.delenv(key)


@pytest.fixture
def settings(store: ModelStore) -> Settings:
    return Settings(
        model_store_dir=store.root,
        device="cpu",
        torch_threads=1,
        max_batch_size=8,
        max_batch_wait_ms=1.0,
        queue_max_size=16,
        preprocess_workers=1,
        max_upload_bytes=256 * 1024,
        max_image_pixels=1_000_000,
        admin_token=ADMIN_TOKEN,
    )


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def digit_png() -> bytes:
    return png_bytes(draw_seven())
