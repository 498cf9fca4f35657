"""The Flask peer as the benchmark runs it: gunicorn on loopback, the committed models, real MNIST digits."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from harness.server import RunningServer, start_server
from service.schemas import EnsemblePrediction, ModelPrediction
from tests.support.servers import COMMITTED_STORE, server_env
from training.data import default_data_dir, load_mnist

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def flask_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    log_path = tmp_path_factory.mktemp("flask") / "server.log"
    server = start_server(server_env(COMMITTED_STORE), log_path, module="bench.peers.flask_app")
    yield server
    server.stop()


def _png(pixels: npt.NDArray[np.uint8]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_flask_peer_reads_mnist_digits_with_every_model_and_the_ensemble(flask_peer: RunningServer) -> None:
    images, labels = load_mnist(default_data_dir(), "test")
    for pixels, label in zip(images[:5].numpy(), labels[:5].tolist(), strict=True):
        response = httpx.post(f"{flask_peer.url}/predict", files={"file": ("digit.png", _png(pixels), "image/png")})
        assert response.status_code == 200
        answer = response.json()
        predictions = [ModelPrediction.model_validate(p) for p in answer["predictions"]]
        ensemble = EnsemblePrediction.model_validate(answer["ensemble"])
        assert [p.model for p in predictions] == ensemble.models == ["mlp", "lenet5", "cnn"]
        assert ensemble.label == label
        assert all(p.label == label for p in predictions)


def test_flask_peer_refuses_what_is_not_an_image(flask_peer: RunningServer) -> None:
    response = httpx.post(f"{flask_peer.url}/predict", files={"file": ("digit.png", b"not an image", "image/png")})
    assert response.status_code == 400
    assert response.json()["detail"].startswith("The upload is not a usable image")
