"""Synthetic uploads of a hand-drawn-like digit: an asymmetric 7 drawn with Pillow, as a scan, a photo of paper
or a browser canvas export, and encoded in any format Pillow writes."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

# Supersampling factor for anti-aliased strokes, as a browser canvas or a camera would produce them.
_SUPERSAMPLE = 4
# Fractions of the glyph box: a "7" whose bar makes the top rows much heavier than the bottom ones, so any
# rotation or mirror is visible in the result.
_SEVEN = ((0.0, 0.0), (1.0, 0.0), (0.35, 1.0))
_STROKE_FRACTION = 0.14


def seven_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    """Mode "L" coverage (255 = ink) of an anti-aliased 7 filling ``box`` (left, top, right, bottom)."""
    width, height = size
    large = Image.new("L", (width * _SUPERSAMPLE, height * _SUPERSAMPLE), 0)
    left, top, right, bottom = (v * _SUPERSAMPLE for v in box)
    stroke = max(1, round(_STROKE_FRACTION * max(right - left, bottom - top)))
    inset = stroke / 2
    points = [
        (left + inset + fx * (right - left - stroke), top + inset + fy * (bottom - top - stroke)) for fx, fy in _SEVEN
    ]
    ImageDraw.Draw(large).line(points, fill=255, width=stroke, joint="curve")
    return large.reduce(_SUPERSAMPLE)


def centred_box(size: tuple[int, int], fraction: float = 0.6) -> tuple[int, int, int, int]:
    """A square box of ``fraction`` of the shorter side, in the middle of ``size``."""
    width, height = size
    side = max(1, round(min(width, height) * fraction))
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def seven(
    size: tuple[int, int] = (200, 200),
    box: tuple[int, int, int, int] | None = None,
    *,
    ink: int = 0,
    paper: int = 255,
) -> Image.Image:
    """Mode "L": a 7 of grey level ``ink`` on ``paper``."""
    mask = seven_mask(size, box or centred_box(size))
    return Image.composite(Image.new("L", size, ink), Image.new("L", size, paper), mask)


def canvas_drawing(size: int = 280, ink: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    """Mode "RGBA": a browser canvas export, strokes of colour ``ink`` on a fully transparent background."""
    alpha = seven_mask((size, size), centred_box((size, size)))
    image = Image.new("RGBA", (size, size), (*ink, 0))
    image.putalpha(alpha)
    return image


def photo_of_paper(size: tuple[int, int] = (320, 240), seed: int = 0) -> Image.Image:
    """Mode "L": dark ink on paper lit from one side and vignetted, with sensor noise."""
    width, height = size
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    lighting = 150.0 + 80.0 * xs / width - 40.0 * np.hypot(xs / width - 0.5, ys / height - 0.5)
    mask = np.asarray(seven_mask(size, centred_box(size, 0.5)), dtype=np.float32) / 255.0
    ink_level = 35.0 + 0.2 * lighting
    pixels = lighting * (1.0 - mask) + ink_level * mask + rng.normal(0.0, 6.0, size=(height, width))
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))


def encode(image: Image.Image, image_format: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **params)
    return buffer.getvalue()
