"""Lines of digits rendered the way users upload them: a scan, a phone photo, or a drawing on a web canvas.

Each renderer takes composed ink (light on black, float in [0, 1], see :mod:`training.synthetic_lines`) and a
seeded generator and returns the file's bytes. The evaluation and the tests read these uploads through the
service's own path, so they measure the whole reader, preprocessing included.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Literal

import numpy as np
from PIL import Image, ImageFilter

from imaging.lines import InkArray

Rendering = Literal["scan", "photo", "canvas"]
RENDERINGS: tuple[Rendering, ...] = ("scan", "photo", "canvas")


def _upscaled(ink: InkArray, scale: float, margin_pixels: int) -> InkArray:
    height, width = ink.shape
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    big = np.asarray(Image.fromarray(ink, mode="F").resize(size, Image.Resampling.BICUBIC), dtype=np.float32)
    return np.pad(np.clip(big, 0.0, 1.0), margin_pixels)


def render_scan(ink: InkArray, rng: np.random.Generator) -> bytes:
    """A flatbed scan: grey PNG, dark ink on paper (a quarter light on dark), a third of them bilevel."""
    line = _upscaled(ink, rng.uniform(2.0, 3.5), int(rng.integers(12, 40)))
    paper, pen = rng.uniform(225, 250), rng.uniform(10, 70)
    grey = paper - line * (paper - pen) + rng.normal(0.0, 2.0, line.shape)
    if rng.uniform() < 0.25:
        grey = 255.0 - grey
    image = Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8))
    if rng.uniform() < 1 / 3:
        image = image.point(lambda level: 255 if level > 127 else 0).convert("1")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def render_photo(ink: InkArray, rng: np.random.Generator) -> bytes:
    """A phone photo of lined paper: RGB JPEG, tinted paper under uneven light, a ruled line under the digits,
    sensor noise and a little blur."""
    line = _upscaled(ink, rng.uniform(2.5, 4.5), int(rng.integers(30, 80)))
    height, width = line.shape
    rows = np.flatnonzero(line.max(axis=1) > 0.3)
    rule_row = min(height - 3, int(rows[-1]) + int(rng.integers(2, 12)))
    rule = np.zeros_like(line)
    rule[rule_row : rule_row + int(rng.integers(2, 4))] = rng.uniform(0.35, 0.6)
    paper = np.array([rng.uniform(215, 245), rng.uniform(210, 240), rng.uniform(195, 235)])
    pen = np.array([rng.uniform(10, 60), rng.uniform(10, 60), rng.uniform(30, 110)])
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    # Light falling off across the page and towards the corners (phone flash, a lamp to one side).
    gradient = 1.0 - rng.uniform(0.1, 0.35) * (xx / width if rng.uniform() < 0.5 else 1 - xx / width)
    vignette = 1.0 - rng.uniform(0.0, 0.2) * (((xx - width / 2) / width) ** 2 + ((yy - height / 2) / height) ** 2)
    light = (gradient * vignette)[..., np.newaxis]
    coverage = np.maximum(line, rule)[..., np.newaxis]
    rgb = (paper - coverage * (paper - pen)) * light + rng.normal(0.0, 3.5, (height, width, 3))
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0))
    )
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(rng.integers(70, 92)))
    return buffer.getvalue()


def render_canvas(ink: InkArray, rng: np.random.Generator) -> bytes:
    """A web-canvas drawing: RGBA PNG, dark strokes whose alpha is the ink, on transparent pixels."""
    line = _upscaled(ink, rng.uniform(2.0, 3.5), int(rng.integers(16, 48)))
    rgba = np.zeros((*line.shape, 4), dtype=np.uint8)
    rgba[..., :3] = int(rng.integers(0, 40))
    rgba[..., 3] = np.round(line * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


RENDERERS: dict[Rendering, Callable[[InkArray, np.random.Generator], bytes]] = {
    "scan": render_scan,
    "photo": render_photo,
    "canvas": render_canvas,
}
