"""Synthetic lines of handwritten digits composed from single digits, with the variations real lines show.

Digits are cropped to their ink, scaled by up to ``size_jitter`` either way, set on a wavy baseline and spaced
apart, touching (strokes just meet) or overlapping, then the whole line is rotated. The result is ink (light on
black, float in [0, 1]) at the digits' own scale; :func:`imaging.lines.normalise_ink` turns it into the reader's
strip exactly as the service does with an upload. Training composes from MNIST training digits only; the
evaluation composes its test lines from MNIST test and USPS digits with the same code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFilter

from imaging.lines import InkArray

Spacing = Literal["apart", "touching", "overlapping"]
SPACINGS: tuple[Spacing, ...] = ("apart", "touching", "overlapping")
LineStyle = Literal["apart", "touching", "mixed"]
LINE_STYLES: tuple[LineStyle, ...] = ("apart", "touching", "mixed")
# Ink above this level counts when deciding where strokes are (MNIST's anti-aliased fringe is fainter).
STROKE_LEVEL = 0.3
MAX_DIGITS = 12


@dataclass(frozen=True)
class LineVariation:
    """How much composed lines vary; the defaults are the ranges the reader is specified to handle."""

    # Each digit's height varies by up to 15 % either way.
    size_jitter: float = 0.15
    # The baseline waves by up to 3 px (at MNIST's 20-px digit height), with a period of 3 to 8 digits.
    max_wave_pixels: float = 3.0
    wave_period_pixels: tuple[float, float] = (60.0, 160.0)
    baseline_jitter_pixels: float = 0.8
    # The whole line is rotated by up to 8 degrees either way.
    max_rotation_deg: float = 8.0
    # Gap between the nearest strokes of two digits written apart.
    apart_gap_pixels: tuple[float, float] = (2.0, 9.0)
    # How far the strokes of overlapping digits cross into each other.
    overlap_pixels: tuple[float, float] = (1.5, 4.5)
    # Lines drawn with a thicker or thinner pen than MNIST's.
    thicken_probability: float = 0.2
    thin_probability: float = 0.1


def crop_glyph(image: npt.NDArray[np.uint8]) -> InkArray:
    """A digit image (light ink on black, uint8) cropped to its ink, as float in [0, 1]."""
    rows = np.flatnonzero(image.any(axis=1))
    cols = np.flatnonzero(image.any(axis=0))
    if rows.size == 0:
        raise ValueError("the digit image holds no ink")
    return image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].astype(np.float32) / np.float32(255.0)


def _scaled(glyph: InkArray, scale: float) -> InkArray:
    height, width = glyph.shape
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(glyph, mode="F").resize(size, Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def _left_profile(stroke: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    """Per row, the first stroke column (inf where the row is empty)."""
    first: npt.NDArray[np.float64] = stroke.argmax(axis=1).astype(np.float64)
    first[~stroke.any(axis=1)] = np.inf
    return first


def compose_ink(
    glyphs: Sequence[InkArray], spacings: Sequence[Spacing], rng: np.random.Generator, variation: LineVariation
) -> InkArray:
    """One line of ``glyphs`` (cropped digits), ``spacings[i]`` between glyph ``i`` and ``i + 1``, unrotated."""
    if not glyphs or len(spacings) != len(glyphs) - 1:
        raise ValueError("need at least one glyph and one spacing between each pair")
    scaled = [_scaled(g, 1.0 + rng.uniform(-variation.size_jitter, variation.size_jitter)) for g in glyphs]
    amplitude = rng.uniform(0.0, variation.max_wave_pixels)
    period = rng.uniform(*variation.wave_period_pixels)
    phase = rng.uniform(0.0, 2 * math.pi)
    tallest = max(g.shape[0] for g in scaled)
    margin = math.ceil(amplitude + 4 * variation.baseline_jitter_pixels) + 2
    height = tallest + 2 * margin
    width = sum(g.shape[1] for g in scaled) + len(scaled) * math.ceil(variation.apart_gap_pixels[1]) + 2
    canvas = np.zeros((height, width), dtype=np.float32)
    # Per canvas row, the last stroke column so far (-inf where nothing is drawn yet).
    right = np.full(height, -np.inf)
    x = 0
    for index, glyph in enumerate(scaled):
        glyph_height, glyph_width = glyph.shape
        centre = x + glyph_width / 2
        baseline = margin + tallest + amplitude * math.sin(2 * math.pi * centre / period + phase)
        baseline += rng.normal(0.0, variation.baseline_jitter_pixels)
        top = int(np.clip(round(baseline - glyph_height), 0, height - glyph_height))
        stroke = glyph > STROKE_LEVEL
        if index > 0:
            x = _place_after(right[top : top + glyph_height], stroke, spacings[index - 1], rng, variation)
            x = max(x, 0)
        x = min(x, width - glyph_width)
        region = canvas[top : top + glyph_height, x : x + glyph_width]
        np.maximum(region, glyph, out=region)
        last = np.where(stroke.any(axis=1), x + glyph_width - 1 - stroke[:, ::-1].argmax(axis=1), -np.inf)
        right[top : top + glyph_height] = np.maximum(right[top : top + glyph_height], last)
        x += glyph_width
    ink = canvas[:, : int(np.flatnonzero(canvas.any(axis=0))[-1]) + 1]
    return _pen_width(ink, rng, variation)


def _place_after(
    right: npt.NDArray[np.float64],
    stroke: npt.NDArray[np.bool_],
    spacing: Spacing,
    rng: np.random.Generator,
    variation: LineVariation,
) -> int:
    """The column for the next glyph so its strokes keep ``spacing`` with the strokes already drawn on its rows."""
    left = _left_profile(stroke)
    shared = np.isfinite(left) & np.isfinite(right)
    if not shared.any():
        # No row in common: fall back on the drawn ink's overall right edge.
        finite = right[np.isfinite(right)]
        edge = float(finite.max()) if finite.size else 0.0
        return math.ceil(edge + 1 + rng.uniform(*variation.apart_gap_pixels))
    # The column where the glyph's strokes would just meet the drawn ones (adjacent on some row).
    contact = float((right[shared] - left[shared]).max()) + 1
    if spacing == "apart":
        return math.ceil(contact + rng.uniform(*variation.apart_gap_pixels))
    if spacing == "touching":
        return round(contact - rng.uniform(0.0, 1.0))
    return round(contact - rng.uniform(*variation.overlap_pixels))


def _pen_width(ink: InkArray, rng: np.random.Generator, variation: LineVariation) -> InkArray:
    draw = rng.uniform()
    if draw < variation.thicken_probability:
        thick = Image.fromarray(np.pad(ink, 1), mode="F").filter(ImageFilter.MaxFilter(3))
        thickened: InkArray = np.asarray(thick, dtype=np.float32)
        return thickened
    if draw < variation.thicken_probability + variation.thin_probability:
        thinned: InkArray = np.clip((ink - 0.35) / 0.65, 0.0, 1.0).astype(np.float32)
        return thinned
    return ink


def rotate_ink(ink: InkArray, angle_deg: float) -> InkArray:
    """``ink`` rotated counter-clockwise by ``angle_deg`` on a canvas grown to hold it all."""
    rotated = Image.fromarray(ink, mode="F").rotate(angle_deg, Image.Resampling.BILINEAR, expand=True)
    return np.clip(np.asarray(rotated, dtype=np.float32), 0.0, 1.0)


def draw_spacings(count: int, rng: np.random.Generator, weights: Sequence[float]) -> list[Spacing]:
    """``count`` spacings drawn independently with ``weights`` over :data:`SPACINGS`."""
    probabilities = np.asarray(weights, dtype=np.float64)
    chosen = rng.choice(len(SPACINGS), size=count, p=probabilities / probabilities.sum())
    return [SPACINGS[int(i)] for i in chosen]


def draw_line_spacings(
    count: int, rng: np.random.Generator, style_weights: Sequence[float], spacing_weights: Sequence[float]
) -> list[Spacing]:
    """``count`` spacings for one line in a style drawn with ``style_weights`` over :data:`LINE_STYLES`.

    A writer keeps a habit along a line: every digit apart, every digit touching or overlapping its neighbour
    (the two in the ratio of ``spacing_weights``), or a mix drawn gap by gap. Drawn gap by gap alone, a long line
    with no gap apart would be rare (0.6 ** 11 for 12 digits), though whole numbers are often written so.
    """
    probabilities = np.asarray(style_weights, dtype=np.float64)
    style = LINE_STYLES[int(rng.choice(len(LINE_STYLES), p=probabilities / probabilities.sum()))]
    if style == "apart":
        return ["apart"] * count
    if style == "touching":
        return draw_spacings(count, rng, (0.0, *spacing_weights[1:]))
    return draw_spacings(count, rng, spacing_weights)


def compose_line(
    glyphs: Sequence[InkArray], spacings: Sequence[Spacing], rng: np.random.Generator, variation: LineVariation
) -> InkArray:
    """A composed line rotated by a random angle within ``variation.max_rotation_deg``."""
    ink = compose_ink(glyphs, spacings, rng, variation)
    return rotate_ink(ink, rng.uniform(-variation.max_rotation_deg, variation.max_rotation_deg))
