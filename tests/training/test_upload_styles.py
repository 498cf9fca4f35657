"""Re-rendered uploads: each style decodes, is seeded, and (scan, canvas) comes back through the service's
preprocessing as the same digit; the photo holds the digit at the intended size under uneven light."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from training.data import default_data_dir, load_mnist
from training.upload_styles import CHECK_STYLES, STYLES, render_bilevel, render_photo, render_thumbnail, through_service


def _digits(count: int = 20) -> np.ndarray:
    images, _ = load_mnist(default_data_dir(), "test")
    digits: np.ndarray = images[:count].numpy()
    return digits


@pytest.mark.parametrize("style", ["scan", "canvas"])
def test_scans_and_drawings_come_back_close_to_the_digit(style: str) -> None:
    digits = _digits()

    prepared, refused = through_service(digits, STYLES[style], seed=0)
    again, _ = through_service(digits, STYLES[style], seed=0)

    assert not refused.any()
    assert np.array_equal(prepared, again)
    difference = np.abs(prepared.astype(np.float64) - digits) / 255.0
    # Resampling changes pixels, not the digit: on average within a twentieth of the range.
    assert difference.mean() < 0.05


def test_photo_holds_the_digit_at_the_intended_size_on_uneven_paper() -> None:
    rng = np.random.default_rng(0)
    for digit in _digits(10):
        image = Image.open(io.BytesIO(render_photo(digit.astype(np.float32) / 255.0, rng)))
        photo = np.asarray(image, np.float64)
        assert photo.shape == (240, 320)
        # Ink is far darker than the paper around it (the brightest of each 16-pixel cell, spread back out); the
        # paper's own level varies across the frame.
        cells = np.asarray(image).reshape(15, 16, 20, 16).max(axis=(1, 3)).astype(np.float64)
        ink = photo < np.kron(cells, np.ones((16, 16))) - 60
        rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
        extent = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
        assert 0.3 * 240 <= extent <= 0.75 * 240
        paper = photo[~ink]
        assert np.percentile(paper, 95) - np.percentile(paper, 5) > 30


def test_check_styles_change_the_strokes_the_way_their_names_say() -> None:
    digits = _digits()
    plain, _ = through_service(digits, CHECK_STYLES["canvas"], seed=0)
    bold, bold_refused = through_service(digits, CHECK_STYLES["bold canvas"], seed=0)
    rng = np.random.default_rng(0)

    bilevel = Image.open(io.BytesIO(render_bilevel(digits[0].astype(np.float32) / 255.0, rng)))
    thumbnail = Image.open(io.BytesIO(render_thumbnail(digits[0].astype(np.float32) / 255.0, rng)))

    assert not bold_refused.any()
    # A thick pen covers more of the 28x28 box than the canvas's own pen, digit for digit.
    assert ((bold > 127).sum(axis=(1, 2)) > (plain > 127).sum(axis=(1, 2))).all()
    assert bilevel.mode == "1"
    assert thumbnail.size == (16, 16)
    # Edge to edge: the ink's longer side spans the whole thumbnail.
    ink = np.asarray(thumbnail) < 150
    assert max(np.ptp(np.flatnonzero(ink.any(axis=0))), np.ptp(np.flatnonzero(ink.any(axis=1)))) == 15
    for style in ("bilevel", "thumbnail"):
        prepared, refused = through_service(digits, CHECK_STYLES[style], seed=0)
        assert not refused.any()
        assert (prepared.max(axis=(1, 2)) == 255).all()
