"""The reference Open Inference Protocol client (``tritonclient.http``, as shipped on PyPI) against the real service
on loopback, serving the committed models, on official MNIST test digits: what it reads equals ``/predict``."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import numpy as np
import numpy.typing as npt
import pytest
import torch
import tritonclient.http as triton
from PIL import Image
from tritonclient.utils import InferenceServerException

from contract import ModelStore
from contract.torchscript import load_torchscript
from harness.server import REPO_ROOT, RunningServer, start_server
from training.data import default_data_dir, load_mnist

BATCH = 64
# Rows that /predict answers one by one may share a batch with others here: float sums may round differently.
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = {
        "DIGITS_MODEL_STORE_DIR": str(REPO_ROOT / "model_store"),
        "DIGITS_DEVICE": "cpu",
        "DIGITS_TORCH_THREADS": "1",
        "DIGITS_PREPROCESS_WORKERS": "1",
    }
    running = start_server(env, tmp_path_factory.mktemp("oip") / "server.log")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: RunningServer) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(f"127.0.0.1:{server.port}")


@pytest.fixture(scope="module")
def digits() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """The first 64 official MNIST test digits as the store's input, ``(64, 1, 28, 28)`` in [0, 1], and labels."""
    images, labels = load_mnist(default_data_dir(), "test")
    return (images[:BATCH, None].numpy() / np.float32(255)).astype(np.float32), labels[:BATCH].numpy()


def png(pixels: npt.NDArray[np.float32]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.round(pixels[0] * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def pixels_input(data: npt.NDArray[np.float32], binary: bool) -> triton.InferInput:
    tensor = triton.InferInput("input__0", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data, binary_data=binary)
    return tensor


def image_input(files: list[bytes]) -> triton.InferInput:
    tensor = triton.InferInput("image", [len(files), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[file] for file in files], dtype=object))
    return tensor


def requested(*names: str, binary: bool = True) -> list[triton.InferRequestedOutput]:
    return [triton.InferRequestedOutput(name, binary_data=binary) for name in names]


def stored_logits(name: str, inputs: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """What Triton's PyTorch backend computes: the stored TorchScript file's forward pass."""
    store = ModelStore(REPO_ROOT / "model_store")
    verified = store.read_verified(name, store.resolve(name))
    module = load_torchscript(verified.model_bytes)
    with torch.inference_mode():
        logits: npt.NDArray[np.float32] = module.eval()(torch.from_numpy(inputs)).numpy()
    return logits


def test_server_and_models_are_live_and_ready(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert all(client.is_model_ready(name) for name in ("cnn", "lenet5", "mlp", "ensemble"))
    assert client.is_model_ready("cnn", "2")
    assert not client.is_model_ready("cnn", "1")
    assert not client.is_model_ready("resnet")


def test_metadata_lists_versions_inputs_and_outputs(client: triton.InferenceServerClient) -> None:
    metadata = client.get_model_metadata("cnn")

    assert metadata["versions"] == ["2"]
    assert metadata["platform"] == "pytorch_libtorch"
    assert metadata["inputs"][0] == {"name": "input__0", "datatype": "FP32", "shape": [-1, 1, 28, 28]}
    assert metadata["outputs"][0] == {"name": "output__0", "datatype": "FP32", "shape": [-1, 10]}
    assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_batch_of_64_returns_the_stored_models_logits(
    client: triton.InferenceServerClient, digits: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]], binary: bool
) -> None:
    inputs, labels = digits

    result = client.infer("cnn", [pixels_input(inputs, binary)], outputs=requested("output__0", binary=binary))

    logits = result.as_numpy("output__0")
    assert logits.shape == (BATCH, 10)
    assert logits.dtype == np.float32
    # The service serves an inference-optimised graph (batch norm folded): same logits up to rounding.
    np.testing.assert_allclose(logits, stored_logits("cnn", inputs), rtol=1e-4, atol=1e-4)
    assert (logits.argmax(axis=1) == labels).mean() >= 0.98


def test_default_request_gets_binary_logits(
    client: triton.InferenceServerClient, digits: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]
) -> None:
    result = client.infer("lenet5", [pixels_input(digits[0][:2], binary=True)], request_id="r1")

    response = result.get_response()
    assert response["id"] == "r1"
    assert [output["name"] for output in response["outputs"]] == ["output__0"]
    assert response["outputs"][0]["parameters"] == {"binary_data_size": 2 * 10 * 4}


def test_image_input_equals_predict_per_model_and_ensemble(
    client: triton.InferenceServerClient,
    server: RunningServer,
    digits: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]],
) -> None:
    files = [png(pixels) for pixels in digits[0][:8]]
    predicted = [
        httpx.post(f"{server.url}/predict", files={"file": ("d.png", file)}, timeout=30).json() for file in files
    ]

    for name in ("cnn", "lenet5", "mlp"):
        result = client.infer(name, [image_input(files)], outputs=requested("probabilities"))
        expected = [
            next(p for p in answer["predictions"] if p["model"] == name)["probabilities"] for answer in predicted
        ]
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected, **TOLERANCE)
    ensemble = client.infer("ensemble", [image_input(files)]).as_numpy("probabilities")
    np.testing.assert_allclose(ensemble, [answer["ensemble"]["probabilities"] for answer in predicted], **TOLERANCE)
    assert ensemble.argmax(axis=1).tolist() == [answer["ensemble"]["label"] for answer in predicted]
    assert ensemble.argmax(axis=1).tolist() == digits[1][:8].tolist()


def test_pixels_and_their_png_give_the_same_probabilities_through_json(
    client: triton.InferenceServerClient, digits: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]
) -> None:
    inputs = digits[0][:4]

    from_pixels = client.infer(
        "ensemble", [pixels_input(inputs, binary=False)], outputs=requested("probabilities", binary=False)
    )
    from_images = client.infer("ensemble", [image_input([png(pixels) for pixels in inputs])])

    # The service re-centres each PNG by mass, as MNIST was: the answers agree in label, not bit for bit.
    assert from_pixels.get_response()["outputs"][0]["data"]
    assert (
        from_pixels.as_numpy("probabilities").argmax(axis=1).tolist()
        == from_images.as_numpy("probabilities").argmax(axis=1).tolist()
    )


def test_wrong_shape_is_a_clear_400(
    client: triton.InferenceServerClient, digits: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]
) -> None:
    flat = np.ascontiguousarray(digits[0][:2].reshape(2, 784))

    with pytest.raises(InferenceServerException) as raised:
        client.infer("cnn", [pixels_input(flat, binary=True)])

    assert raised.value.status() == "400"
    assert raised.value.message() == "Input 'input__0' must be FP32 of shape [N, 1, 28, 28], got FP32 [2, 784]."


def test_unknown_model_is_a_clear_404(
    client: triton.InferenceServerClient, digits: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]
) -> None:
    with pytest.raises(InferenceServerException) as raised:
        client.infer("resnet", [pixels_input(digits[0][:1], binary=True)])

    assert raised.value.status() == "404"
    assert "loaded models: cnn, lenet5, mlp, ensemble" in str(raised.value.message())
