"""imaging.decoding: the pixel limit from the header, libspng giving Pillow's pixels, JPEG drafts, mode errors."""

from __future__ import annotations

import io
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from imaging.decoding import DecodeLimits, decode_image, to_grayscale
from imaging.errors import ImageTooLargeError, InvalidImageError
from tests.support import images

LIMITS = DecodeLimits(max_image_pixels=50_000_000)


def test_bomb_is_refused_from_the_header_before_decoding() -> None:
    started = time.perf_counter()
    for side in (8_000, 20_000, 50_000):
        with pytest.raises(ImageTooLargeError):
            decode_image(images.png_header_claiming(side, side), LIMITS)
    assert time.perf_counter() - started < 0.5


def test_pixel_limit_applies_per_call() -> None:
    data = images.encode(images.seven((100, 80)), "PNG")
    assert decode_image(data, DecodeLimits(max_image_pixels=8_000)).size == (100, 80)
    with pytest.raises(ImageTooLargeError):
        decode_image(data, DecodeLimits(max_image_pixels=7_999))
    assert decode_image(data, DecodeLimits(max_image_pixels=8_000)).size == (100, 80)


def _pillow_pixels(data: bytes) -> tuple[str, npt.NDArray[np.uint8]]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.mode, np.asarray(image)


_PNG_LAYOUTS: dict[str, Callable[[], bytes]] = {
    **{
        mode: (lambda mode=mode: images.encode(images.canvas_drawing(ink=(30, 90, 150)).convert(mode), "PNG"))
        for mode in ("L", "LA", "RGB", "RGBA")
    },
    "RGB 16-bit": lambda: images.png_rgb16(np.random.default_rng(0).integers(0, 65_536, (40, 30, 3), dtype=np.uint16)),
    "palette": lambda: images.encode(images.canvas_drawing().convert("P"), "PNG"),
    "grey with tRNS key": lambda: images.encode(images.seven().convert("L"), "PNG", transparency=255),
    "grey 16-bit": lambda: images.encode(images.seven().convert("I;16"), "PNG"),
}


@pytest.mark.parametrize("make", _PNG_LAYOUTS.values(), ids=_PNG_LAYOUTS.keys())
def test_png_decoding_gives_pillows_pixels_in_pillows_mode(make: Callable[[], bytes]) -> None:
    data = make()
    decoded = decode_image(data, LIMITS)

    mode, pixels = _pillow_pixels(data)
    assert decoded.mode == mode
    np.testing.assert_array_equal(np.asarray(decoded), pixels)


def test_decode_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        DecodeLimits(max_image_pixels=0)


def test_unconvertible_colour_space_is_invalid() -> None:
    with pytest.raises(InvalidImageError):
        to_grayscale(Image.new("La", (4, 4)))


def test_decode_draft_shrinks_big_jpegs_but_keeps_enough_pixels() -> None:
    data = images.encode(images.seven((4000, 3000)).convert("RGB"), "JPEG")
    image = decode_image(data, LIMITS, draft_side_pixels=256)
    assert image.mode == "L"
    assert image.size == (500, 375)
    assert decode_image(data, LIMITS).size == (4000, 3000)


def test_transparency_is_composited_onto_white_for_dark_ink() -> None:
    grey = np.asarray(to_grayscale(images.canvas_drawing(64)))
    assert grey[0, 0] == 255
    assert grey.min() == 0
