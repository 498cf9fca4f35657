"""The TorchServe peer's handler on a batch as TorchServe hands it over (the server itself is not in the test
install): each request answered in order, an unusable image refused alone."""

from __future__ import annotations

import io

from PIL import Image

from bench.peers.pipeline import DigitPipeline
from bench.peers.torchserve_handler import DigitsHandler
from tests.support.servers import COMMITTED_STORE
from training.data import default_data_dir, load_mnist


class _RecordingContext:
    """What the handler uses of TorchServe's ``Context``: per-request response statuses."""

    def __init__(self) -> None:
        self.statuses: dict[int, tuple[int, str]] = {}

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.statuses[idx] = (code, phrase)


def test_a_batch_is_answered_in_order_and_a_bad_image_fails_alone() -> None:
    images, labels = load_mnist(default_data_dir(), "test")
    uploads = []
    for pixels in images[:2].numpy():
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        uploads.append(buffer.getvalue())
    handler = DigitsHandler(DigitPipeline(COMMITTED_STORE, max_image_pixels=1_000_000))
    context = _RecordingContext()
    batch = [{"file": bytearray(uploads[0])}, {"file": bytearray(b"not an image")}, {"body": bytearray(uploads[1])}]
    answers = handler.handle(batch, context)
    assert list(context.statuses) == [1]
    assert context.statuses[1][0] == 400
    first, second = answers[0], answers[2]
    assert not isinstance(first, str) and not isinstance(second, str)
    assert [first["ensemble"]["label"], second["ensemble"]["label"]] == labels[:2].tolist()
    assert [p["model"] for p in first["predictions"]] == ["mlp", "lenet5", "cnn"]
