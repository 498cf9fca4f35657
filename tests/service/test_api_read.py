"""``POST /read`` with the committed line reader: real MNIST test digits rendered as uploads, the answer's
structure (digits, boxes in the upload's pixels, probabilities), debug images, and every error status."""

from __future__ import annotations

import base64
import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from contract import ModelStore
from evaluation.line_images import render_canvas, render_scan
from service import errors
from service.config import Settings
from service.deps import STATE_KEY
from service.main import create_app
from tests.support.stand_ins import FIXED_LOGITS, FixedLogits, publish
from tests.support.uploads import upload
from training.data import default_data_dir, load_mnist
from training.synthetic_lines import LineVariation, compose_line, crop_glyph

COMMITTED_READER = Path(__file__).resolve().parents[2] / "model_store" / "reader"
NO_LINE = "No digits found in the image. Upload an image with a clearly visible handwritten number."
OVERLOADED = "The service is overloaded. Retry after the number of seconds in the Retry-After header."


@pytest.fixture
def reader_settings(store: ModelStore, settings: Settings) -> Settings:
    """The stand-in digit models plus the committed line reader."""
    shutil.copytree(COMMITTED_READER, store.root / "reader")
    return settings.model_copy(update={"max_upload_bytes": 2 * 1024 * 1024, "max_image_pixels": 4_000_000})


@pytest.fixture
def reader_client(reader_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(reader_settings)) as client:
        yield client


@pytest.fixture(scope="module")
def mnist_test_glyphs() -> tuple[list[np.ndarray], list[int]]:
    images, labels = load_mnist(default_data_dir(), "test")
    return [crop_glyph(image) for image in images[:500].numpy()], labels[:500].tolist()


def _number(
    glyphs: tuple[list[np.ndarray], list[int]], indices: list[int], seed: int, *, touching: bool = False
) -> tuple[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    spacing = "touching" if touching else "apart"
    ink = compose_line([glyphs[0][i] for i in indices], [spacing] * (len(indices) - 1), rng, LineVariation())
    return "".join(str(glyphs[1][i]) for i in indices), ink


def test_read_returns_200_with_the_number_its_digits_and_boxes(
    reader_client: TestClient, store: ModelStore, mnist_test_glyphs: tuple[list[np.ndarray], list[int]]
) -> None:
    text, ink = _number(mnist_test_glyphs, [3, 2, 1, 18, 4], seed=0)
    data = render_scan(ink, np.random.default_rng(0))
    width, height = Image.open(io.BytesIO(data)).size

    response = reader_client.post("/read", files=upload(data))

    assert response.status_code == 200
    body = response.json()
    assert body["text"] == text
    assert body["model"] == {"name": "reader", "version": store.resolve("reader")}
    assert 0.0 < body["confidence"] <= 1.0  # calibrated on validation lines, where it is conservative
    assert [digit["label"] for digit in body["digits"]] == [int(char) for char in text]
    for digit in body["digits"]:
        assert sum(digit["probabilities"]) == pytest.approx(1.0, abs=1e-3)
        assert digit["confidence"] == max(digit["probabilities"])
        x0, y0, x1, y1 = digit["box"]
        assert 0 <= x0 < x1 <= width + 1 and 0 <= y0 < y1 <= height + 1
    lefts = [digit["box"][0] for digit in body["digits"]]
    assert lefts == sorted(lefts)
    assert "line_png_base64" not in body


@pytest.mark.parametrize("version", [3, 5])
def test_readers_of_either_frame_width_place_their_digits(
    reader_settings: Settings, version: int, mnist_test_glyphs: tuple[list[np.ndarray], list[int]]
) -> None:
    """Version 3 emits a frame per 4 columns, version 5 per 2: the manifest says which, and the boxes follow."""
    text, ink = _number(mnist_test_glyphs, [3, 2, 1, 18, 4], seed=0)
    data = render_scan(ink, np.random.default_rng(0))
    pinned = reader_settings.model_copy(update={"model_versions": {"reader": version}})

    with TestClient(create_app(pinned)) as client:
        body = client.post("/read", files=upload(data)).json()

    assert (body["text"], body["model"]["version"]) == (text, version)
    boxes = [digit["box"] for digit in body["digits"]]
    assert all(left[2] <= right[2] and left[0] < right[0] for left, right in zip(boxes, boxes[1:], strict=False))
    width = Image.open(io.BytesIO(data)).size[0]
    assert boxes[0][0] < width / 5 and boxes[-1][2] > 4 * width / 5


def test_read_touching_digits_on_a_canvas_returns_200(
    reader_client: TestClient, mnist_test_glyphs: tuple[list[np.ndarray], list[int]]
) -> None:
    readings = []
    for seed in range(5):
        text, ink = _number(mnist_test_glyphs, [5 * seed + k for k in range(4)], seed=seed, touching=True)
        response = reader_client.post("/read", files=upload(render_canvas(ink, np.random.default_rng(seed))))
        assert response.status_code == 200
        readings.append(response.json()["text"] == text)
    assert sum(readings) >= 4


def test_read_debug_returns_the_line_and_each_digit(
    reader_client: TestClient, mnist_test_glyphs: tuple[list[np.ndarray], list[int]]
) -> None:
    _, ink = _number(mnist_test_glyphs, [0, 1, 2], seed=1)

    response = reader_client.post(
        "/read", params={"debug": "true"}, files=upload(render_scan(ink, np.random.default_rng(1)))
    )

    assert response.status_code == 200
    body = response.json()
    line = Image.open(io.BytesIO(base64.b64decode(body["line_png_base64"])))
    assert line.height == 32
    for digit in body["digits"]:
        assert Image.open(io.BytesIO(base64.b64decode(digit["image_png_base64"]))).size == (28, 28)


@pytest.mark.parametrize("paper", [255, 0])
def test_read_image_without_ink_returns_422(reader_client: TestClient, paper: int) -> None:
    blank = io.BytesIO()
    Image.new("L", (400, 120), paper).save(blank, format="PNG")

    response = reader_client.post("/read", files=upload(blank.getvalue()))

    assert response.status_code == 422
    assert response.json() == {"detail": NO_LINE}


def test_read_not_an_image_returns_415(reader_client: TestClient) -> None:
    response = reader_client.post("/read", files=upload(b"%PDF-1.7 not an image"))

    assert response.status_code == 415
    assert response.json() == {"detail": errors.UnsupportedMediaTypeError.default_detail}


def test_read_corrupt_image_returns_400(reader_client: TestClient) -> None:
    response = reader_client.post("/read", files=upload(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64))

    assert response.status_code == 400


def test_read_upload_over_byte_limit_returns_413(reader_client: TestClient, reader_settings: Settings) -> None:
    response = reader_client.post("/read", files=upload(b"\x89PNG" + b"\x00" * reader_settings.max_upload_bytes))

    assert response.status_code == 413


def test_read_missing_file_returns_422(reader_client: TestClient) -> None:
    response = reader_client.post("/read", data={"other": "x"})

    assert response.status_code == 422
    assert response.json() == {"detail": errors.MissingFileError.default_detail}


def test_read_queue_full_returns_503_with_retry_after(
    reader_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_args: object) -> None:
        raise errors.QueueFullError()

    monkeypatch.setattr(reader_client.app_state[STATE_KEY].line_batcher, "check_intake", refuse)

    response = reader_client.post("/read", files=upload(b"never decoded"))

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {"detail": OVERLOADED}


def test_read_without_a_reader_returns_503(client: TestClient) -> None:
    response = client.post("/read", files=upload(b"never decoded"))

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {"detail": "No model that reads numbers is loaded. Try again later."}


def test_predict_serves_only_the_digit_classifiers(reader_client: TestClient, digit_png: bytes) -> None:
    predicted = reader_client.post("/predict", files=upload(digit_png))
    asked_for_reader = reader_client.post("/predict", params={"models": "reader"}, files=upload(digit_png))
    listed = reader_client.get("/models").json()

    assert predicted.status_code == 200
    assert [p["model"] for p in predicted.json()["predictions"]] == ["cnn", "lenet5", "mlp"]
    assert asked_for_reader.status_code == 422
    kinds = {model["name"]: model["kind"] for model in listed["models"]}
    assert kinds == {
        "cnn": "digit_classifier",
        "lenet5": "digit_classifier",
        "mlp": "digit_classifier",
        "reader": "line_reader",
    }


def test_kind_comes_from_the_manifest_not_the_name(store: ModelStore, settings: Settings) -> None:
    # A digit classifier that happens to be called "reader" is still a digit classifier.
    publish(store, "reader", FixedLogits(FIXED_LOGITS["cnn"]))

    with TestClient(create_app(settings)) as client:
        response = client.post("/read", files=upload(b"never decoded"))

    assert response.status_code == 503
