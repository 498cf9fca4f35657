"""Service test fixtures: a tiny model store of scripted stand-in models (no trained weights), settings that
point at it, a ``TestClient`` running the app's lifespan, and digit images drawn with Pillow."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient as TestClient
from PIL import Image, ImageDraw
from torch import nn

from modelstore import NUM_CLASSES, Manifest, ModelStore
from service.config import Settings
from service.main import create_app
from training.export import to_torchscript

# Each stand-in model answers with fixed logits whatever the image, so tests know the exact probabilities.
FIXED_LOGITS: dict[str, list[float]] = {
    "mlp": [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 4.0, 0.0, 0.0],
    "lenet5": [0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0],
    "cnn": [0.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0],
}
MODEL_NAMES = tuple(FIXED_LOGITS)
TEMPERATURES = {"mlp": 1.0, "lenet5": 2.0, "cnn": 0.5}
ENSEMBLE_WEIGHTS = {"mlp": 1.0, "lenet5": 1.0, "cnn": 2.0}
ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class FixedLogits(nn.Module):
    """``(N, 1, 28, 28)`` to the same ``(N, 10)`` logits for every image."""

    def __init__(self, logits: Sequence[float]) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(list(logits), dtype=torch.float32), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :1] * 0.0 + self.logits


class WrongOutput(nn.Module):
    """Scripts fine but answers 5 classes instead of 10: the registry's warm-up must refuse it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :5]


def script_to_file(module: nn.Module, path: Path) -> Path:
    path.write_bytes(to_torchscript(module))
    return path


def publish(store: ModelStore, name: str, module: nn.Module | None = None, *, tmp_dir: Path) -> Manifest:
    """Publish ``module`` (default: the fixed-logits stand-in for ``name``) as the next version of ``name``."""
    model_file = script_to_file(module or FixedLogits(FIXED_LOGITS[name]), tmp_dir / f"{name}.pt")
    return store.publish(
        name,
        model_file,
        parameters=NUM_CLASSES,
        metrics={"test_accuracy": 0.5},
        training_config={"seed": 0},
        temperature=TEMPERATURES.get(name, 1.0),
        ensemble_weight=ENSEMBLE_WEIGHTS.get(name, 1.0),
        torch_version=torch.__version__,
    )


@pytest.fixture(scope="session")
def pristine_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Version 1 of each stand-in model, built once per session; tests get a copy."""
    root = tmp_path_factory.mktemp("pristine")
    store = ModelStore(root / "store")
    for name in MODEL_NAMES:
        publish(store, name, tmp_dir=root)
    return store.root


@pytest.fixture
def store(pristine_store: Path, tmp_path: Path) -> ModelStore:
    return ModelStore(Path(shutil.copytree(pristine_store, tmp_path / "store")))


@pytest.fixture(autouse=True)
def _no_digits_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the test alone, never from ``DIGITS_*`` variables of the shell running pytest."""
    import os

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


def png_bytes(image: Image.Image, image_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def draw_seven(size: int = 96, ink: int = 0, paper: int = 255) -> Image.Image:
    """A hand-drawn style 7: dark strokes on light paper, as a phone photo or scan would have it."""
    image = Image.new("L", (size, size), paper)
    draw = ImageDraw.Draw(image)
    width = max(2, size // 12)
    draw.line([(size * 0.25, size * 0.2), (size * 0.75, size * 0.2)], fill=ink, width=width)
    draw.line([(size * 0.75, size * 0.2), (size * 0.4, size * 0.85)], fill=ink, width=width)
    return image


@pytest.fixture
def digit_png() -> bytes:
    return png_bytes(draw_seven())


def upload(data: bytes, filename: str = "digit.png") -> dict[str, tuple[str, bytes, str]]:
    """The ``files=`` argument of a multipart upload in field ``file``."""
    return {"file": (filename, data, "application/octet-stream")}
