"""Line normalisation: skew, ruled lines, the strip's geometry, the map back to the upload, and whole uploads."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from contract import LINE_HEIGHT
from imaging.decoding import DecodeLimits
from imaging.errors import NoDigitFoundError
from imaging.lines import (
    INK_HEIGHT_PIXELS,
    LINE_HEIGHT_PIXELS,
    WIDTH_STEP_PIXELS,
    digit_image,
    estimate_skew_deg,
    ink_box,
    normalise_ink,
    prepare_line,
    remove_ruled_lines,
)
from training.synthetic_lines import rotate_ink

LIMITS = DecodeLimits(max_image_pixels=25_000_000)


def _bar_line(width: int = 200) -> np.ndarray:
    """Ten blocks, 20 px high and 12 px wide, 8 px apart: a stand-in for a line of digits."""
    ink = np.zeros((30, width), dtype=np.float32)
    for left in range(4, width - 12, 20):
        ink[5:25, left : left + 12] = 1.0
    return ink


def test_strip_height_matches_the_store_contract() -> None:
    assert LINE_HEIGHT_PIXELS == LINE_HEIGHT


@pytest.mark.parametrize("angle", [-8.0, -3.0, 0.0, 5.0, 8.0])
def test_skew_is_measured_from_the_ink(angle: float) -> None:
    assert estimate_skew_deg(rotate_ink(_bar_line(), angle)) == pytest.approx(angle, abs=0.6)


@pytest.mark.parametrize("angle", [-8.0, 0.0, 8.0])
def test_a_slanted_line_comes_out_level_and_28_pixels_high(angle: float) -> None:
    strip = normalise_ink(rotate_ink(_bar_line(), angle)).pixels
    assert strip.shape[0] == LINE_HEIGHT_PIXELS
    assert strip.shape[1] % WIDTH_STEP_PIXELS == 0
    rows = np.flatnonzero(strip.max(axis=1) > 0.5)
    assert INK_HEIGHT_PIXELS - 3 <= rows[-1] - rows[0] + 1 <= INK_HEIGHT_PIXELS + 1
    # Ten separate blocks survive: deskewing did not smear them together.
    columns = strip.max(axis=0) > 0.5
    assert int(np.sum(np.diff(columns.astype(int)) == 1)) == 10


def test_strip_points_map_back_to_the_source() -> None:
    ink = np.zeros((100, 300), dtype=np.float32)
    ink[40:60, 50:250] = 1.0
    line = normalise_ink(ink, deskew=False)
    x0, y0, x1, y1 = line.source_box(*ink_box(line.pixels, 0, line.pixels.shape[1]))
    assert (x0, y0, x1, y1) == pytest.approx((50, 40, 250, 60), abs=1.5)


def test_empty_ink_is_refused() -> None:
    with pytest.raises(ValueError, match="no ink"):
        normalise_ink(np.zeros((20, 20), dtype=np.float32))


def test_a_ruled_line_is_removed_and_the_digits_kept() -> None:
    digits = _bar_line(400)
    ruled = np.pad(digits, ((0, 10), (0, 0)))
    ruled[33:35, :] = 1.0
    cleaned = remove_ruled_lines(ruled)
    assert not cleaned[33:35].any()
    np.testing.assert_array_equal(cleaned[:30], digits)


def test_lines_without_a_rule_are_untouched() -> None:
    digits = _bar_line()
    np.testing.assert_array_equal(remove_ruled_lines(digits), digits)


def test_digit_image_is_an_mnist_style_digit() -> None:
    line = normalise_ink(_bar_line(), deskew=False)
    digit = digit_image(line.pixels, 0, 30)
    assert digit.shape == (28, 28)
    rows = np.flatnonzero(digit.any(axis=1))
    assert rows[-1] - rows[0] + 1 == 20


def _drawn_number_png(text_boxes: list[tuple[int, int, int, int]], size: tuple[int, int]) -> bytes:
    image = Image.new("L", size, 245)
    draw = ImageDraw.Draw(image)
    for box in text_boxes:
        draw.rectangle(box, fill=20)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_prepare_line_maps_boxes_to_the_uploaded_pixels() -> None:
    # Two dark blocks on light paper, on a 3000-px-wide upload that is shrunk for analysis.
    boxes = [(600, 200, 800, 600), (1200, 250, 1400, 650)]
    prepared = prepare_line(_drawn_number_png(boxes, (3000, 900)), LIMITS, with_png=True)
    strip = prepared.line.pixels
    middle = strip.shape[1] // 2
    left = prepared.line.source_box(*ink_box(strip, 0, middle))
    right = prepared.line.source_box(*ink_box(strip, middle, strip.shape[1]))
    # Good to about one strip pixel (the 450 rows of ink fill INK_HEIGHT_PIXELS rows), as area-averaged edge
    # pixels count as ink from a fifth of coverage.
    strip_pixel = (650 - 200) / INK_HEIGHT_PIXELS
    assert left == pytest.approx(boxes[0], abs=1.25 * strip_pixel)
    assert right == pytest.approx(boxes[1], abs=1.25 * strip_pixel)
    assert prepared.png is not None and prepared.png.startswith(b"\x89PNG")


def test_prepare_line_with_no_ink_raises_no_digit_found() -> None:
    with pytest.raises(NoDigitFoundError):
        prepare_line(_drawn_number_png([], (400, 100)), LIMITS)
