"""Hostile and unusual uploads through HTTP: each gets its documented status, never a 500, and the service stays ready.

The decoder's contract (every hostile file maps to one service error, bombs are refused from the header) is proven
in tests/service/test_preprocessing.py, and the API statuses of empty, truncated-PNG, PDF, SVG and text uploads in
tests/service/test_api_predict.py. Here: the remaining hostile files through the API, the byte limit against a real
uvicorn process (refused while streaming, the rest never read), and valid but unusual encodings of real MNIST
digits, which the committed models must read as the right digit.
"""

from __future__ import annotations

import http.client
import io
import socket
import time
import zipfile
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from fastapi.testclient import TestClient
from PIL import GifImagePlugin, Image

from harness.server import RunningServer, start_server
from service import errors
from service.main import create_app
from service.uploads import upload_too_large
from tests.support import images
from tests.support.servers import COMMITTED_STORE, clean_settings, record_figures, server_env
from tests.support.uploads import upload

TIMEOUT_S = 10.0
LIMIT_BYTES = 64 * 1024
CHUNK_BYTES = 4096
BOUNDARY = "reliability"
PAGE_PIXELS = 160
SCALE = 4
# Where the scaled digit's corner sits on the page: off centre, as on a real page.
DIGIT_CORNER = (12, 30)
GIF_FRAMES = 300
HUGE_EXIF_ENTRIES = 60_000

Digit = tuple[npt.NDArray[np.uint8], int]


def on_paper(digit: npt.NDArray[np.uint8]) -> Image.Image:
    """Mode "L": the digit black on white, scaled up and off centre, as a scan of a handwritten page would be."""
    size = digit.shape[0] * SCALE
    page = Image.new("L", (PAGE_PIXELS, PAGE_PIXELS), 255)
    page.paste(Image.fromarray(255 - digit).resize((size, size), Image.Resampling.BILINEAR), DIGIT_CORNER)
    return page


def cmyk_jpeg(digit: npt.NDArray[np.uint8]) -> bytes:
    return images.encode(on_paper(digit).convert("CMYK"), "JPEG", quality=92)


def exif_rotated_jpeg(digit: npt.NDArray[np.uint8], orientation: int) -> bytes:
    """Pixels stored turned, with the EXIF tag that turns them upright (a 6 stored upside down reads as a 9)."""
    return images.exif_rotated_jpeg(on_paper(digit), orientation)


def gif_with_other_digits_after(digit: npt.NDArray[np.uint8], others: list[npt.NDArray[np.uint8]]) -> bytes:
    """``GIF_FRAMES`` frames: ``digit`` first, then other digits; only the first frame is the upload's digit."""
    frames = [on_paper(digit)] + [on_paper(others[i % len(others)]) for i in range(GIF_FRAMES - 1)]
    return images.encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=20)


def png_with_huge_exif(digit: npt.NDArray[np.uint8]) -> bytes:
    return images.with_exif_chunk(images.encode(on_paper(digit), "PNG"), images.huge_exif(HUGE_EXIF_ENTRIES))


def zip_holding_a_png() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("digit.png", images.encode(images.seven(), "PNG"))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def committed_client() -> Iterator[TestClient]:
    """The app serving the committed, trained models."""
    settings = clean_settings(model_store_dir=COMMITTED_STORE, device="cpu", torch_threads=1)
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def digits(mnist_test: tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]) -> list[Digit]:
    """The first test digit of each class, 0 to 9."""
    pixels, labels = mnist_test
    first_of_each = [int(np.flatnonzero(labels == label)[0]) for label in range(10)]
    return [(pixels[index], int(labels[index])) for index in first_of_each]


def assert_still_ready(client: TestClient) -> None:
    assert client.get("/health/ready").status_code == 200


HOSTILE: dict[str, tuple[Callable[[], bytes], type[errors.ServiceError]]] = {
    "truncated_jpeg": (lambda: images.encode(images.seven().convert("RGB"), "JPEG")[:1500], errors.InvalidImageError),
    "png_with_corrupt_crc": (
        lambda: images.with_corrupt_crc(images.encode(images.seven(), "PNG")),
        errors.InvalidImageError,
    ),
    "bomb_claiming_50000x50000": (lambda: images.png_header_claiming(50_000, 50_000), errors.ImageTooLargeError),
    "zip": (zip_holding_a_png, errors.UnsupportedMediaTypeError),
}


@pytest.mark.parametrize(("make", "error"), HOSTILE.values(), ids=HOSTILE.keys())
def test_predict_hostile_file_returns_its_status_and_stays_ready(
    committed_client: TestClient, make: Callable[[], bytes], error: type[errors.ServiceError]
) -> None:
    data = make()

    response = committed_client.post("/predict", files=upload(data))

    assert response.status_code == error.status_code
    assert response.json() == {"detail": error.default_detail}
    assert_still_ready(committed_client)


VALID_ENCODINGS: dict[str, Callable[[npt.NDArray[np.uint8]], bytes]] = {
    "cmyk_jpeg": cmyk_jpeg,
    **{f"exif_orientation_{o}": partial(exif_rotated_jpeg, orientation=o) for o in (3, 6, 8)},
    "png_with_huge_exif": png_with_huge_exif,
}


@pytest.mark.parametrize("encode", VALID_ENCODINGS.values(), ids=VALID_ENCODINGS.keys())
def test_predict_valid_unusual_encoding_returns_200_with_the_right_digit(
    committed_client: TestClient, digits: list[Digit], encode: Callable[[npt.NDArray[np.uint8]], bytes]
) -> None:
    answers = [
        committed_client.post("/predict", files=upload(encode(pixels))).json()["ensemble"]["label"]
        for pixels, _ in digits
    ]

    assert answers == [label for _, label in digits]
    assert_still_ready(committed_client)


def test_predict_gif_with_hundreds_of_frames_reads_the_first_one(
    committed_client: TestClient, digits: list[Digit]
) -> None:
    first, label = digits[7]
    data = gif_with_other_digits_after(first, [pixels for pixels, other in digits if other != label])
    with GifImagePlugin.GifImageFile(io.BytesIO(data)) as animation:
        assert animation.n_frames == GIF_FRAMES

    started = time.perf_counter()
    response = committed_client.post("/predict", files=upload(data))
    record_figures("animated_gif", {"frames": GIF_FRAMES, "answered_in_s": round(time.perf_counter() - started, 3)})

    assert response.status_code == 200
    assert response.json()["ensemble"]["label"] == label
    assert_still_ready(committed_client)


# -- the byte limit, against a real server -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited_server(pristine_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = server_env(pristine_store, max_upload_bytes=LIMIT_BYTES)
    server = start_server(env, tmp_path_factory.mktemp("limit") / "server.log")
    yield server
    server.stop()


def send_head(server: RunningServer, headers: dict[str, str]) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT_S)
    lines = [
        "POST /predict HTTP/1.1",
        f"Host: 127.0.0.1:{server.port}",
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}",
    ]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, response.read()


def chunk(data: bytes) -> bytes:
    """One chunk of ``Transfer-Encoding: chunked``."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


TOO_LARGE = f'{{"detail":"{upload_too_large(LIMIT_BYTES).detail}"}}'.encode()


def test_declared_length_over_the_limit_is_refused_before_any_body_byte(limited_server: RunningServer) -> None:
    with send_head(limited_server, {"Content-Length": str(1 << 30)}) as sock:
        status, body = read_response(sock)

    assert (status, body) == (413, TOO_LARGE)
    assert httpx.get(f"{limited_server.url}/health/ready").status_code == 200


def test_streamed_body_over_the_limit_is_refused_without_reading_the_rest(limited_server: RunningServer) -> None:
    # Chunked, so the server cannot know the size in advance. Only twice the limit is ever sent of a body that
    # would be a hundred times the limit: a server that read the whole body before answering would wait forever.
    part_head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'.encode()
    with send_head(limited_server, {"Transfer-Encoding": "chunked"}) as sock:
        sock.sendall(chunk(part_head))
        for _ in range(2 * LIMIT_BYTES // CHUNK_BYTES):
            sock.sendall(chunk(bytes(CHUNK_BYTES)))
        status, body = read_response(sock)

    assert (status, body) == (413, TOO_LARGE)
    assert httpx.get(f"{limited_server.url}/health/ready").status_code == 200
