"""How users' uploads of one digit really look, rendered from a dataset digit: scans (tight crops, bilevel, 16-bit,
noisy paper), phone photos (JPEG, uneven light, colour cast, blur, ballpoint, pencil), canvas exports (RGBA, LA)
and the digit itself slanted, thinned or thickened.

Every rendering takes the digit's ink coverage (``float32`` in [0, 1], ink = 1, as MNIST stores it) and a seeded
``numpy`` generator, and returns the encoded file a user would send. The upload suite (:mod:`evaluation.uploads`)
names the categories built from these.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFilter

Ink = npt.NDArray[np.float32]
Rng = np.random.Generator
Rendering = Callable[[Ink, Rng], bytes]

# A 3x3 max or min filter moves a stroke's edge by one pixel; at the sizes rendered here (ink 60-160 px tall,
# strokes about 10-25 px wide) two or three steps are a thin or a bold pen.
_MORPH_STEPS = (2, 4)


def encode(image: Image.Image, image_format: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **params)
    return buffer.getvalue()


# -- building blocks -----------------------------------------------------------------------------------------


def crop_to_ink(ink: Ink) -> Ink:
    rows = np.flatnonzero(ink.max(axis=1) > 0)
    cols = np.flatnonzero(ink.max(axis=0) > 0)
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def scale_ink(ink: Ink, height_px: int, max_width_px: int | None = None) -> Ink:
    """The ink's bounding box resized (aspect kept, bicubic) to ``height_px`` tall, or narrower if it would be
    wider than ``max_width_px``."""
    tight = crop_to_ink(ink)
    scale = height_px / tight.shape[0]
    if max_width_px is not None:
        scale = min(scale, max_width_px / tight.shape[1])
    size = (max(1, round(tight.shape[1] * scale)), max(1, round(tight.shape[0] * scale)))
    resized = Image.fromarray(tight.astype(np.float32)).resize(size, Image.Resampling.BICUBIC)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def pad(ink: Ink, left: int, top: int, right: int, bottom: int) -> Ink:
    return np.pad(ink, ((top, bottom), (left, right)))


def random_margins(rng: Rng, low: int, high: int, tight_sides: int = 0) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) in ``[low, high]``, with ``tight_sides`` of them (chosen at random) zero."""
    margins = [int(v) for v in rng.integers(low, high + 1, size=4)]
    for side in rng.choice(4, size=tight_sides, replace=False):
        margins[int(side)] = 0
    left, top, right, bottom = margins
    return left, top, right, bottom


def on_page(ink: Ink, side: int, rng: Rng) -> Ink:
    """``ink`` at a random place on a ``side`` x ``side`` page (``ink`` must fit)."""
    left = int(rng.integers(0, side - ink.shape[1] + 1))
    top = int(rng.integers(0, side - ink.shape[0] + 1))
    return pad(ink, left, top, side - left - ink.shape[1], side - top - ink.shape[0])


def morph(ink: Ink, steps: int, *, thicker: bool) -> Ink:
    """Grey dilation (``thicker``) or erosion by ``steps`` 3x3 filters: a bolder or finer pen."""
    image = Image.fromarray(pad(ink, steps, steps, steps, steps))
    size_filter = ImageFilter.MaxFilter(3) if thicker else ImageFilter.MinFilter(3)
    for _ in range(steps):
        image = image.filter(size_filter)
    return np.asarray(image, dtype=np.float32)


def rotate(ink: Ink, degrees: float) -> Ink:
    rotated = Image.fromarray(ink).rotate(degrees, Image.Resampling.BICUBIC, expand=True, fillcolor=0.0)
    return np.clip(np.asarray(rotated, dtype=np.float32), 0.0, 1.0)


def on_paper(ink: Ink, paper: float | Ink, ink_level: float | Ink) -> Ink:
    """Grey levels of ink over paper (both may vary per pixel)."""
    return np.asarray(paper * (1.0 - ink) + ink_level * ink, dtype=np.float32)


def grey_image(levels: Ink) -> Image.Image:
    return Image.fromarray(np.clip(levels, 0, 255).round().astype(np.uint8))


def _scan_levels(ink: Ink, rng: Rng, noise_sigma: float = 2.0) -> Ink:
    paper = float(rng.uniform(225, 255))
    levels = on_paper(ink, paper, float(rng.uniform(0, 50)))
    return levels + rng.normal(0.0, noise_sigma, levels.shape).astype(np.float32)


def _lighting(shape: tuple[int, ...], rng: Rng) -> Ink:
    """A smooth light field in [0.55, 1]: a linear gradient in a random direction plus vignetting."""
    height, width = shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xs / width + np.sin(angle) * ys / height + 1.0) / 2.0
    vignette = np.hypot(xs / width - 0.5, ys / height - 0.5)
    return np.asarray(0.55 + 0.35 * ramp + 0.1 * (1.0 - vignette), dtype=np.float32).clip(0.55, 1.0)


# -- renderings ----------------------------------------------------------------------------------------------


def scan_tight(ink: Ink, rng: Rng) -> bytes:
    """A grey scan cropped to the ink on all four sides (a form field cut out by another program)."""
    return encode(grey_image(_scan_levels(scale_ink(ink, int(rng.integers(60, 161))), rng)), "PNG")


def scan_tight_some_sides(ink: Ink, rng: Rng) -> bytes:
    """A grey scan with the ink touching one to three edges, paper on the others."""
    margins = random_margins(rng, 4, 40, tight_sides=int(rng.integers(1, 4)))
    placed = pad(scale_ink(ink, int(rng.integers(60, 161))), *margins)
    return encode(grey_image(_scan_levels(placed, rng)), "PNG")


def small_digit(ink: Ink, rng: Rng) -> bytes:
    """A digit 12 to 40 pixels tall somewhere on a larger scan."""
    side = int(rng.integers(120, 301))
    placed = on_page(scale_ink(ink, int(rng.integers(12, 41)), max_width_px=side), side, rng)
    return encode(grey_image(_scan_levels(placed, rng)), "PNG")


def large_photo(ink: Ink, rng: Rng) -> bytes:
    """A page photographed at over 1,000 pixels, the digit a quarter to half of its height, as a JPEG."""
    side = int(rng.integers(1100, 1601))
    placed = on_page(scale_ink(ink, int(side * rng.uniform(0.25, 0.5)), max_width_px=side - 80), side, rng)
    levels = on_paper(placed, 235.0 * _lighting(placed.shape, rng), 35.0)
    levels += rng.normal(0.0, 3.0, levels.shape).astype(np.float32)
    return encode(grey_image(levels).convert("RGB"), "JPEG", quality=85)


def _bilevel(ink: Ink, rng: Rng) -> Image.Image:
    placed = pad(scale_ink(ink, int(rng.integers(60, 151))), *random_margins(rng, 6, 40))
    return Image.fromarray(np.where(placed > 0.5, 0, 255).astype(np.uint8)).convert("1", dither=Image.Dither.NONE)


def bilevel_png(ink: Ink, rng: Rng) -> bytes:
    return encode(_bilevel(ink, rng), "PNG")


def bilevel_bmp(ink: Ink, rng: Rng) -> bytes:
    return encode(_bilevel(ink, rng), "BMP")


def bilevel_tiff(ink: Ink, rng: Rng) -> bytes:
    """A fax-style 1-bit TIFF (CCITT group 4), as document scanners write them."""
    return encode(_bilevel(ink, rng), "TIFF", compression="group4")


def grey16_png(ink: Ink, rng: Rng) -> bytes:
    """A 16-bit grey scan whose levels span only part of the range, as scanner software often saves them."""
    placed = pad(scale_ink(ink, int(rng.integers(60, 161))), *random_margins(rng, 6, 40))
    paper, ink_level = rng.uniform(40_000, 60_000), rng.uniform(2_000, 12_000)
    levels = on_paper(placed, paper, ink_level) + rng.normal(0, 200, placed.shape)
    return encode(Image.fromarray(levels.clip(0, 65_535).astype(np.uint16)), "PNG")


def noisy_scan(ink: Ink, rng: Rng) -> bytes:
    """An 8-bit scan of grainy, uneven paper: noise with a sigma of 4 to 10 grey levels and blotchy texture."""
    placed = pad(scale_ink(ink, int(rng.integers(60, 161))), *random_margins(rng, 6, 40))
    blotches = Image.fromarray(rng.normal(0, 1, (8, 8)).astype(np.float32)).resize(
        placed.shape[::-1], Image.Resampling.BICUBIC
    )
    paper = 215.0 + 12.0 * np.asarray(blotches, dtype=np.float32)
    levels = on_paper(placed, paper, float(rng.uniform(10, 60)))
    levels += rng.normal(0.0, rng.uniform(4, 10), placed.shape).astype(np.float32)
    return encode(grey_image(levels), "PNG")


def _photo(ink: Ink, rng: Rng, ink_rgb: tuple[float, float, float]) -> bytes:
    side = int(rng.integers(300, 801))
    placed = on_page(scale_ink(ink, int(side * rng.uniform(0.3, 0.7)), max_width_px=side), side, rng)
    light = _lighting(placed.shape, rng)
    cast = rng.uniform(0.85, 1.0, size=3)  # warm or cool light: the paper is not neutral grey
    channels = [on_paper(placed, 240.0 * cast[c] * light, ink_rgb[c] * light) for c in range(3)]
    pixels = np.stack(channels, axis=2) + rng.normal(0.0, 4.0, (*placed.shape, 3))
    image = Image.fromarray(pixels.clip(0, 255).round().astype(np.uint8), mode="RGB")
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 1.5))))
    return encode(image, "JPEG", quality=int(rng.integers(70, 91)))


def phone_photo(ink: Ink, rng: Rng) -> bytes:
    """Black marker on paper under uneven, coloured light, slightly out of focus, JPEG-compressed."""
    return _photo(ink, rng, (30.0, 30.0, 35.0))


def side_lit_photo(ink: Ink, rng: Rng) -> bytes:
    """A small 320x240 phone photo of paper lit from one side and vignetted, the digit 40-70 % of its height
    anywhere on it, with sensor noise, as a JPEG."""
    placed = on_page(scale_ink(ink, int(240 * rng.uniform(0.4, 0.7)), max_width_px=240), 240, rng)
    placed = np.pad(placed, ((0, 0), (0, 80)) if rng.random() < 0.5 else ((0, 0), (80, 0)))
    ys, xs = np.mgrid[0 : placed.shape[0], 0 : placed.shape[1]].astype(np.float32)
    width, height = placed.shape[1], placed.shape[0]
    lit_from_right = rng.random() < 0.5
    ramp = xs / width if lit_from_right else 1.0 - xs / width
    lighting = 150.0 + 80.0 * ramp - 40.0 * np.hypot(xs / width - 0.5, ys / height - 0.5)
    levels = on_paper(placed, lighting, 35.0 + 0.2 * lighting) + rng.normal(0.0, 5.0, placed.shape).astype(np.float32)
    return encode(grey_image(levels), "JPEG", quality=85)


def blue_ballpoint(ink: Ink, rng: Rng) -> bytes:
    return _photo(ink, rng, (float(rng.uniform(20, 60)), float(rng.uniform(40, 80)), float(rng.uniform(140, 200))))


def pencil(ink: Ink, rng: Rng) -> bytes:
    """Graphite: grey, low-contrast strokes with a grainy texture on slightly grey paper."""
    placed = pad(scale_ink(ink, int(rng.integers(60, 161))), *random_margins(rng, 6, 40))
    grain = rng.uniform(0.7, 1.0, placed.shape).astype(np.float32)
    levels = on_paper(placed * grain, float(rng.uniform(220, 245)), float(rng.uniform(90, 140)))
    return encode(grey_image(levels + rng.normal(0, 2.0, placed.shape).astype(np.float32)), "PNG")


def _canvas(ink: Ink, rng: Rng) -> Ink:
    """The digit drawn on a 280x280 canvas, ink about 200 pixels tall, as the web page's own canvas has it."""
    scaled = scale_ink(ink, int(rng.integers(150, 221)), max_width_px=260)
    left = (280 - scaled.shape[1]) // 2 + int(rng.integers(-20, 21))
    top = (280 - scaled.shape[0]) // 2 + int(rng.integers(-20, 21))
    left, top = max(0, min(left, 280 - scaled.shape[1])), max(0, min(top, 280 - scaled.shape[0]))
    return pad(scaled, left, top, 280 - left - scaled.shape[1], 280 - top - scaled.shape[0])


def _rgba(alpha: Ink, rgb: tuple[int, int, int]) -> bytes:
    image = Image.new("RGBA", alpha.shape[::-1], (*rgb, 0))
    image.putalpha(grey_image(alpha * 255.0))
    return encode(image, "PNG")


def canvas_thick(ink: Ink, rng: Rng) -> bytes:
    """Dark strokes of a thick pen on a transparent canvas (RGBA PNG)."""
    return _rgba(morph(_canvas(ink, rng), _MORPH_STEPS[1], thicker=True), (0, 0, 0))


def canvas_thin(ink: Ink, rng: Rng) -> bytes:
    """Dark strokes of a thin pen on a transparent canvas (RGBA PNG)."""
    return _rgba(morph(_canvas(ink, rng), _MORPH_STEPS[1], thicker=False), (20, 20, 20))


def la_alpha_ink(ink: Ink, rng: Rng) -> bytes:
    """Grey + alpha: black everywhere, the digit only in the alpha channel."""
    alpha = grey_image(_canvas(ink, rng) * 255.0)
    return encode(Image.merge("LA", (Image.new("L", alpha.size, 0), alpha)), "PNG")


def light_on_dark(ink: Ink, rng: Rng) -> bytes:
    """Light ink on a dark, opaque background (a dark-themed drawing app's export, chalk on a board)."""
    levels = on_paper(_canvas(ink, rng), float(rng.uniform(0, 50)), float(rng.uniform(200, 255)))
    return encode(grey_image(levels).convert("RGB"), "PNG")


def slanted(ink: Ink, rng: Rng) -> bytes:
    """The whole digit turned by up to 15 degrees either way, as a scan with a margin."""
    turned = rotate(scale_ink(ink, int(rng.integers(60, 161))), float(rng.uniform(-15, 15)))
    return encode(grey_image(_scan_levels(pad(crop_to_ink(turned), *random_margins(rng, 6, 40)), rng)), "PNG")


def _restroked(ink: Ink, rng: Rng, thicker: bool) -> bytes:
    scaled = morph(scale_ink(ink, int(rng.integers(80, 161))), _MORPH_STEPS[0], thicker=thicker)
    return encode(grey_image(_scan_levels(pad(crop_to_ink(scaled), *random_margins(rng, 6, 40)), rng)), "PNG")


def thin_strokes(ink: Ink, rng: Rng) -> bytes:
    return _restroked(ink, rng, thicker=False)


def bold_strokes(ink: Ink, rng: Rng) -> bytes:
    return _restroked(ink, rng, thicker=True)


def dataset_image(ink: Ink, _rng: Rng) -> bytes:
    """The digit exactly as a dataset stores it (dark ink on white, every pixel), as an 8-bit grey PNG."""
    return encode(grey_image(255.0 * (1.0 - ink)), "PNG")


def dataset_image_with_margin(ink: Ink, rng: Rng) -> bytes:
    """The same with a 2-pixel paper margin: how the digit reads when nothing touches the border."""
    return dataset_image(pad(ink, 2, 2, 2, 2), rng)
