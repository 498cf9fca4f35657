"""``POST /predict`` through the ASGI app: the 200 answer's exact numbers and every error status with its detail."""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from torch import nn

from contract import ModelStore
from contract.ensemble import calibrated_log_probs, ensemble_probs
from service import errors
from service.config import Settings
from service.deps import STATE_KEY
from service.inference import BatchPredictor, DigitPrediction, DigitRequest
from service.main import create_app
from tests.support.stand_ins import (
    CHECK_LOGITS,
    CHECK_THRESHOLD,
    ENSEMBLE_WEIGHTS,
    FIXED_LOGITS,
    TEMPERATURES,
    publish,
    publish_check,
)
from tests.support.uploads import draw_seven, png_bytes, upload

ALL_MODELS = ["cnn", "lenet5", "mlp"]
STEP_TIMEOUT_S = 10.0
OVERLOADED = "The service is overloaded. Retry after the number of seconds in the Retry-After header."


def expected_log_probs(name: str) -> torch.Tensor:
    return calibrated_log_probs(torch.tensor([FIXED_LOGITS[name]]), TEMPERATURES[name])


def expected_ensemble(names: list[str]) -> list[float]:
    combined = ensemble_probs([expected_log_probs(n) for n in names], [ENSEMBLE_WEIGHTS[n] for n in names])
    return combined[0].tolist()


def test_predict_digit_returns_200_with_every_model_and_the_ensemble(client: TestClient, digit_png: bytes) -> None:
    response = client.post("/predict", files=upload(digit_png))

    assert response.status_code == 200
    body = response.json()
    assert [p["model"] for p in body["predictions"]] == ALL_MODELS
    for prediction in body["predictions"]:
        probs = expected_log_probs(prediction["model"]).exp()[0]
        assert prediction["version"] == 1
        assert prediction["label"] == int(probs.argmax())
        assert prediction["confidence"] == pytest.approx(float(probs.max()), abs=1e-6)
        assert prediction["probabilities"] == pytest.approx(probs.tolist(), abs=1e-6)
        assert sum(prediction["probabilities"]) == pytest.approx(1.0, abs=1e-5)
    ensemble = body["ensemble"]
    assert ensemble["models"] == ALL_MODELS
    assert ensemble["probabilities"] == pytest.approx(expected_ensemble(ALL_MODELS), abs=1e-6)
    assert ensemble["label"] == 1
    assert sum(ensemble["probabilities"]) == pytest.approx(1.0, abs=1e-5)
    assert len(body["request_id"]) == 32
    assert body["batch_size"] >= 1
    assert set(body["timings_ms"]) == {"read_ms", "preprocess_ms", "inference_ms", "total_ms"}
    assert "image_png_base64" not in body


def test_predict_model_subset_returns_200_in_request_order(client: TestClient, digit_png: bytes) -> None:
    response = client.post("/predict", params={"models": "mlp, lenet5,mlp"}, files=upload(digit_png))

    assert response.status_code == 200
    body = response.json()
    assert [p["model"] for p in body["predictions"]] == ["mlp", "lenet5"]
    assert body["ensemble"]["models"] == ["mlp", "lenet5"]
    assert body["ensemble"]["probabilities"] == pytest.approx(expected_ensemble(["mlp", "lenet5"]), abs=1e-6)
    assert body["ensemble"]["label"] == 7


def test_predict_debug_returns_200_with_the_28x28_model_input(client: TestClient) -> None:
    response = client.post("/predict", params={"debug": "true"}, files=upload(png_bytes(draw_seven(300))))

    assert response.status_code == 200
    image = Image.open(io.BytesIO(base64.b64decode(response.json()["image_png_base64"])))
    assert (image.format, image.mode, image.size) == ("PNG", "L", (28, 28))
    # MNIST polarity: the border is black background, the ink is bright.
    assert image.getextrema() == (0, 255)
    assert image.getpixel((0, 0)) == 0


@pytest.mark.parametrize("image_format", ["JPEG", "BMP", "GIF", "WEBP", "TIFF"], ids=str.lower)
def test_predict_other_image_formats_return_200(client: TestClient, image_format: str) -> None:
    response = client.post("/predict", files=upload(png_bytes(draw_seven().convert("RGB"), image_format)))

    assert response.status_code == 200


def test_predict_corrupt_image_returns_400(client: TestClient, digit_png: bytes) -> None:
    response = client.post("/predict", files=upload(digit_png[: len(digit_png) // 2]))

    assert response.status_code == 400
    assert response.json() == {"detail": errors.InvalidImageError.default_detail}


def test_predict_empty_file_returns_400(client: TestClient) -> None:
    response = client.post("/predict", files=upload(b""))

    assert response.status_code == 400
    assert response.json() == {"detail": errors.InvalidImageError.default_detail}


def test_predict_upload_over_byte_limit_returns_413(client: TestClient, settings: Settings) -> None:
    response = client.post("/predict", files=upload(b"\x89PNG\r\n\x1a\n" + bytes(settings.max_upload_bytes)))

    assert response.status_code == 413
    assert response.json() == {
        "detail": f"The upload is larger than the limit of {settings.max_upload_bytes} bytes. Send a smaller file."
    }


def test_predict_chunked_upload_over_byte_limit_returns_413(client: TestClient, settings: Settings) -> None:
    boundary = "limitboundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'.encode()

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(settings.max_upload_bytes // 4096 + 2):
            yield bytes(4096)

    response = client.post(
        "/predict", content=body(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )

    assert response.status_code == 413
    assert response.json()["detail"].startswith("The upload is larger than the limit")


def test_predict_too_many_pixels_returns_413(client: TestClient, settings: Settings) -> None:
    huge = Image.new("1", (settings.max_image_pixels // 1000 + 1, 1000), 1)

    response = client.post("/predict", files=upload(png_bytes(huge)))

    assert response.status_code == 413
    assert response.json() == {"detail": errors.ImageTooLargeError.default_detail}


@pytest.mark.parametrize(
    "data",
    [b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", b"<svg xmlns='http://www.w3.org/2000/svg'/>", b"just some text"],
    ids=["pdf", "svg", "text"],
)
def test_predict_not_an_image_returns_415(client: TestClient, data: bytes) -> None:
    response = client.post("/predict", files=upload(data, filename="digit.png"))

    assert response.status_code == 415
    assert response.json() == {"detail": errors.UnsupportedMediaTypeError.default_detail}


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"files": {"image": ("digit.png", b"\x89PNG", "image/png")}},
        {"data": {"file": ""}, "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
        {"json": {"file": "aGVsbG8="}},
        {},
    ],
    ids=["wrong-field", "urlencoded", "json", "no-body"],
)
def test_predict_missing_file_field_returns_422(client: TestClient, request_kwargs: dict[str, object]) -> None:
    response = client.post("/predict", **request_kwargs)

    assert response.status_code == 422
    assert response.json() == {"detail": errors.MissingFileError.default_detail}


def test_predict_unknown_model_returns_422(client: TestClient, digit_png: bytes) -> None:
    response = client.post("/predict", params={"models": "mlp,resnet"}, files=upload(digit_png))

    assert response.status_code == 422
    assert response.json() == {"detail": errors.UnknownModelError.default_detail}


def test_predict_invalid_debug_flag_returns_422(client: TestClient, digit_png: bytes) -> None:
    response = client.post("/predict", params={"debug": "maybe"}, files=upload(digit_png))

    assert response.status_code == 422
    assert response.json() == {
        "detail": f"Invalid query parameter 'debug'. {errors.InvalidRequestError.default_detail}"
    }


@pytest.mark.parametrize("paper", [255, 0, 128], ids=["white", "black", "grey"])
def test_predict_image_without_digit_returns_422(client: TestClient, paper: int) -> None:
    response = client.post("/predict", files=upload(png_bytes(Image.new("L", (64, 64), paper))))

    assert response.status_code == 422
    assert response.json() == {"detail": errors.NoDigitFoundError.default_detail}


def refuse_as_overloaded(*_args: object) -> None:
    raise errors.QueueFullError()


def test_predict_queue_full_returns_503_with_retry_after(
    client: TestClient, digit_png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The queue fills up while this request's upload is being decoded.
    monkeypatch.setattr(client.app_state[STATE_KEY].batcher, "submit", refuse_as_overloaded)

    response = client.post("/predict", files=upload(digit_png))

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {"detail": OVERLOADED}


def test_predict_full_queue_is_refused_before_reading_the_upload(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client.app_state[STATE_KEY].batcher, "check_intake", refuse_as_overloaded)

    response = client.post("/predict", files=upload(b"never decoded"))

    assert response.status_code == 503
    assert response.json() == {"detail": OVERLOADED}


class FailsOnRealImages(nn.Module):
    """Passes the registry's warm-up (random probes) but raises on an uploaded digit (black corner pixel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x[:, 0, 0, 0] == 0.0).all()):
            raise RuntimeError("kernel failure")
        return x.flatten(1)[:, :10]


def test_predict_failing_batch_returns_503_and_the_service_keeps_serving(
    store: ModelStore, settings: Settings, digit_png: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    publish(store, "broken", FailsOnRealImages())

    with TestClient(create_app(settings)) as client:
        failed = client.post("/predict", params={"models": "broken"}, files=upload(digit_png))
        served = client.post("/predict", params={"models": "mlp"}, files=upload(digit_png))

    assert failed.status_code == 503
    assert failed.headers["retry-after"] == "1"
    assert failed.json() == {"detail": errors.InferenceFailedError.default_detail}
    assert "kernel failure" in caplog.text
    assert served.status_code == 200


def test_predict_with_no_model_loaded_returns_503(tmp_path: Path, settings: Settings, digit_png: bytes) -> None:
    empty = settings.model_copy(update={"model_store_dir": tmp_path / "empty"})

    with TestClient(create_app(empty)) as client:
        response = client.post("/predict", files=upload(digit_png))

    assert response.status_code == 503
    assert response.json() == {"detail": errors.ServiceUnavailableError.default_detail}


def test_predict_concurrent_requests_are_batched(
    settings: Settings, digit_png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first batch is held in the inference thread until every other request waits in the queue.
    release = threading.Event()
    held_sizes: list[int] = []
    run_batch = BatchPredictor.__call__

    def held(self: BatchPredictor, requests: Sequence[DigitRequest]) -> list[DigitPrediction]:
        held_sizes.append(len(requests))
        release.wait(timeout=STEP_TIMEOUT_S)
        return run_batch(self, requests)

    monkeypatch.setattr(BatchPredictor, "__call__", held)
    batching = settings.model_copy(update={"max_batch_size": 4, "max_batch_wait_ms": 60_000.0})

    with TestClient(create_app(batching)) as client, ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(client.post, "/predict", files=upload(digit_png)) for _ in range(8)]
        batcher = client.app_state[STATE_KEY].batcher
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while (not held_sizes or batcher.queue_depth < 8 - held_sizes[0]) and time.monotonic() < deadline:
            time.sleep(0.01)
        release.set()
        responses = [future.result() for future in futures]

    assert [response.status_code for response in responses] == [200] * 8
    # At least 4 requests waited behind the held batch, so the next batch was full.
    assert held_sizes[1] == 4
    assert max(response.json()["batch_size"] for response in responses) == 4


def test_predict_without_a_digit_check_leaves_the_field_out(client: TestClient, digit_png: bytes) -> None:
    response = client.post("/predict", files=upload(digit_png))

    assert response.status_code == 200
    assert "digit_check" not in response.json()


def test_predict_says_whether_the_image_is_one_digit_and_keeps_the_labels(
    settings: Settings, store: ModelStore, digit_png: bytes
) -> None:
    publish_check(store)
    with TestClient(create_app(settings)) as client:
        response = client.post("/predict", files=upload(digit_png))

    assert response.status_code == 200
    body = response.json()
    score = float(torch.softmax(torch.tensor(CHECK_LOGITS), dim=0)[0])
    assert body["digit_check"] == {
        "one_digit": False,
        "reason": "not a digit",
        "score": pytest.approx(score, abs=1e-6),
        "threshold": CHECK_THRESHOLD,
        "model": "check",
        "version": 1,
    }
    assert [p["model"] for p in body["predictions"]] == ALL_MODELS
    assert body["ensemble"]["probabilities"] == pytest.approx(expected_ensemble(ALL_MODELS), abs=1e-6)


@pytest.mark.parametrize(
    ("logits", "expected"),
    [
        ([3.0, 0.0, 0.0], {"one_digit": True}),
        ([0.0, 2.0, 1.0], {"one_digit": False, "reason": "several digits"}),
    ],
)
def test_predict_digit_check_verdicts(
    settings: Settings, store: ModelStore, digit_png: bytes, logits: list[float], expected: dict[str, object]
) -> None:
    publish_check(store, logits=logits)
    with TestClient(create_app(settings)) as client:
        check = client.post("/predict", files=upload(digit_png)).json()["digit_check"]

    assert {key: check[key] for key in ("one_digit", "reason") if key in check} == expected


def test_predict_rejects_the_digit_check_as_a_selected_model(
    settings: Settings, store: ModelStore, digit_png: bytes
) -> None:
    publish_check(store)
    with TestClient(create_app(settings)) as client:
        response = client.post("/predict?models=check", files=upload(digit_png))

    assert response.status_code == 422
    assert response.json() == {"detail": errors.UnknownModelError.default_detail}
