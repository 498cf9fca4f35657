"""Composed lines: spacing means what it says, sizes and rotation stay in range, and all of it is seeded."""

from __future__ import annotations

import numpy as np
import pytest

from training.synthetic_lines import (
    STROKE_LEVEL,
    LineVariation,
    compose_ink,
    compose_line,
    crop_glyph,
    draw_line_spacings,
    draw_spacings,
)

STILL = LineVariation(size_jitter=0.0, max_wave_pixels=0.0, baseline_jitter_pixels=0.0, thicken_probability=0.0,
                      thin_probability=0.0)  # fmt: skip


def _block(height: int = 20, width: int = 10) -> np.ndarray:
    image = np.zeros((28, 28), dtype=np.uint8)
    image[4 : 4 + height, 9 : 9 + width] = 255
    return crop_glyph(image)


def _stroke_runs(ink: np.ndarray) -> int:
    columns = (ink > STROKE_LEVEL).any(axis=0).astype(int)
    return int(np.sum(np.diff(np.concatenate(([0], columns))) == 1))


def test_crop_glyph_keeps_only_the_ink() -> None:
    assert _block().shape == (20, 10)
    with pytest.raises(ValueError, match="no ink"):
        crop_glyph(np.zeros((28, 28), dtype=np.uint8))


def test_apart_digits_leave_a_gap_and_touching_ones_meet() -> None:
    rng = np.random.default_rng(0)
    glyphs = [_block(), _block(), _block()]
    assert _stroke_runs(compose_ink(glyphs, ["apart", "apart"], rng, STILL)) == 3
    assert _stroke_runs(compose_ink(glyphs, ["touching", "touching"], rng, STILL)) == 1
    overlapping = compose_ink(glyphs, ["overlapping", "overlapping"], rng, STILL)
    assert _stroke_runs(overlapping) == 1
    assert overlapping.shape[1] < 30


def test_sizes_vary_within_the_jitter() -> None:
    rng = np.random.default_rng(1)
    variation = LineVariation(max_wave_pixels=0.0, baseline_jitter_pixels=0.0, thicken_probability=0.0,
                              thin_probability=0.0)  # fmt: skip
    for _ in range(20):
        ink = compose_ink([_block()], [], rng, variation)
        assert 17 <= ink.shape[0] - 2 * int(np.argmax(ink.any(axis=1))) <= 23


def test_composition_is_seeded() -> None:
    glyphs = [_block(), _block(16, 12)]
    first = compose_line(glyphs, ["touching"], np.random.default_rng(7), LineVariation())
    again = compose_line(glyphs, ["touching"], np.random.default_rng(7), LineVariation())
    np.testing.assert_array_equal(first, again)


def test_spacings_follow_their_weights() -> None:
    drawn = draw_spacings(3000, np.random.default_rng(0), (0.5, 0.5, 0.0))
    assert "overlapping" not in drawn
    assert 1300 < drawn.count("apart") < 1700


def test_a_line_keeps_its_writers_spacing_habit() -> None:
    rng = np.random.default_rng(0)
    lines = [draw_line_spacings(11, rng, (0.3, 0.4, 0.3), (0.4, 0.35, 0.25)) for _ in range(2000)]
    all_apart = sum(set(line) == {"apart"} for line in lines)
    no_gap_apart = sum("apart" not in line for line in lines)
    # Gap by gap, 11 gaps with none apart would come up 0.6 ** 11 of the time (about 0.4 %).
    assert 500 < all_apart < 700
    assert 700 < no_gap_apart < 900
    touching_only = [line for line in lines if "apart" not in line]
    assert any("overlapping" in line and "touching" in line for line in touching_only)


def test_composing_needs_one_spacing_per_gap() -> None:
    with pytest.raises(ValueError, match="one spacing"):
        compose_ink([_block(), _block()], [], np.random.default_rng(0), STILL)
