"""Synthetic images that are not one digit: canonical like the service's inputs, seeded, and free of lookalikes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from training.negatives import (
    DIGIT_LOOKALIKES,
    HELD_OUT_FONTS,
    LETTERS,
    SYMBOLS,
    TRAIN_FONTS,
    compose_numbers,
    glyphs_in,
    number_inks,
    render_glyphs,
    render_scribbles,
)


def _digits(count: int = 20) -> np.ndarray:
    rng = np.random.default_rng(0)
    digits = np.zeros((count, 28, 28), dtype=np.uint8)
    for i in range(count):
        top, left = rng.integers(4, 8, size=2)
        digits[i, top : top + 20, left + 6 : left + 10] = 255  # a 1 of 20 x 4 pixels
    return digits


def _assert_canonical(images: np.ndarray) -> None:
    """What the service's preprocessing makes: 28x28, longer ink side 20, centred by mass within a pixel."""
    assert images.shape[1:] == (28, 28) and images.dtype == np.uint8
    for image in images:
        rows, cols = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
        assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 in (20, 21)
        mass = image.astype(np.float64)
        centre = (mass.sum(axis=1) @ np.arange(28) / mass.sum(), mass.sum(axis=0) @ np.arange(28) / mass.sum())
        assert abs(centre[0] - 14) <= 1 and abs(centre[1] - 14) <= 1


def test_letters_and_symbols_leave_out_every_digit_lookalike() -> None:
    assert not DIGIT_LOOKALIKES & set(LETTERS)
    assert {"A", "x", "?", "#"} <= set(LETTERS + SYMBOLS)
    assert not {"0", "1", "O", "l", "S", "$", "/", "|", "("} & set(LETTERS + SYMBOLS)


def test_held_out_fonts_are_other_families_and_draw_most_glyphs() -> None:
    families = {name.split("-")[0].removesuffix(".ttf") for name in TRAIN_FONTS}
    assert not any(name.split("-")[0].removesuffix(".ttf") in families for name in HELD_OUT_FONTS)
    for font in (*TRAIN_FONTS, *HELD_OUT_FONTS):
        assert len(glyphs_in(font, LETTERS)) >= 30


def test_glyphs_drawn_as_other_characters_are_left_out() -> None:
    # Computer Modern keeps TeX's layout: "<" is drawn as "¡", "£" as "Θ", "¶" as an acute accent (a stroke a
    # reader takes for a 1).
    assert glyphs_in("cmr10.ttf", "?<£¶A") == ("?", "A")
    assert glyphs_in("cmtt10.ttf", "?<£¶A") == ("?", "<", "A")
    assert glyphs_in("DejaVuSerif.ttf", SYMBOLS) == tuple(c for c in SYMBOLS if c not in "✓✗★")


@pytest.mark.parametrize(
    "make",
    [
        lambda seed: render_glyphs(12, TRAIN_FONTS, LETTERS + SYMBOLS, seed),
        lambda seed: render_scribbles(12, seed),
        lambda seed: compose_numbers(_digits(), 12, seed),
    ],
    ids=["glyphs", "scribbles", "numbers"],
)
def test_generators_are_canonical_and_seeded(make: Callable[[int], np.ndarray]) -> None:
    first, again, other = make(0), make(0), make(1)

    _assert_canonical(first)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_numbers_are_several_digits_side_by_side() -> None:
    inks = number_inks(_digits(), 50, seed=0)

    for ink in inks:
        columns = np.flatnonzero(ink.any(axis=0))
        rows = np.flatnonzero(ink.any(axis=1))
        # Two or more 1s of 4 x 20 pixels, each at least 85 % of full size: wider than one 1, and about as tall.
        assert columns[-1] - columns[0] + 1 >= 2 * 4 * 0.85
        assert 20 * 0.85 <= rows[-1] - rows[0] + 1 <= 20 * 1.15 * 1.3
