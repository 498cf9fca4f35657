"""Images re-rendered the ways users upload them, then canonicalised by the service's own preprocessing: training
digits seen the way the service sees uploads, and held-out uploads for evaluation.

Three styles of upload, each drawn from a light-on-dark ink image of any size (an MNIST or USPS digit, a
composed number, a glyph): ``scan`` (dark ink on white paper, 256x256 PNG), ``canvas`` (a browser canvas export:
black strokes on transparent pixels, 280x280 RGBA PNG) and ``photo`` (paper under uneven light with sensor noise,
as a 320x240 JPEG). The ink is placed at a random size and position, so every upload exercises the crop, the
box and the centring. :data:`CHECK_STYLES` adds three that change the strokes themselves, for the digit check:
``bilevel`` (a 1-bit scan), ``bold canvas`` (a thick pen on the canvas) and ``thumbnail`` (the ink filling a
16x16 grey scan edge to edge, as postal-code digits are stored). :func:`through_service` returns what the models
would see, as uint8 28x28 images.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFilter

from contract import IMAGE_SIZE
from imaging.decoding import DecodeLimits
from imaging.digit import prepare_digit
from imaging.errors import ImagingError

_Ink = npt.NDArray[np.float32]
Renderer = Callable[[_Ink, np.random.Generator], bytes]
_LIMITS = DecodeLimits(max_image_pixels=1_000_000)


def _place(ink: _Ink, size: tuple[int, int], rng: np.random.Generator) -> _Ink:
    """``ink`` scaled so its longer side is 40-70 % of the shorter side of ``size``, at a random position."""
    width, height = size
    side = round(min(width, height) * rng.uniform(0.4, 0.7))
    scale = side / max(ink.shape)
    resized = Image.fromarray(ink).resize(
        (max(1, round(ink.shape[1] * scale)), max(1, round(ink.shape[0] * scale))), Image.Resampling.BICUBIC
    )
    glyph = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
    top = int(rng.integers(0, height - glyph.shape[0] + 1))
    left = int(rng.integers(0, width - glyph.shape[1] + 1))
    canvas = np.zeros((height, width), dtype=np.float32)
    canvas[top : top + glyph.shape[0], left : left + glyph.shape[1]] = glyph
    return canvas


def _encode(image: Image.Image, image_format: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **params)
    return buffer.getvalue()


def render_scan(ink: _Ink, rng: np.random.Generator) -> bytes:
    """Dark ink on white paper, as a flatbed scan saved as PNG."""
    coverage = _place(ink, (256, 256), rng)
    ink_level = rng.uniform(0, 60)
    pixels = 250.0 - coverage * (250.0 - ink_level)
    return _encode(Image.fromarray(pixels.round().astype(np.uint8)), "PNG")


def render_canvas(ink: _Ink, rng: np.random.Generator) -> bytes:
    """Black strokes on transparent pixels, as the web page's drawing canvas exports them."""
    coverage = _place(ink, (280, 280), rng)
    rgba = np.zeros((280, 280, 4), dtype=np.uint8)
    rgba[..., 3] = (coverage * 255.0).round().astype(np.uint8)
    return _encode(Image.fromarray(rgba), "PNG")


def render_bilevel(ink: _Ink, rng: np.random.Generator) -> bytes:
    """A 1-bit scan (PNG): ink cut at a random level, every pixel black or white."""
    coverage = _place(ink, (256, 256), rng)
    black = coverage > rng.uniform(0.3, 0.6)
    return _encode(
        Image.fromarray(np.where(black, 0, 255).astype(np.uint8)).convert("1", dither=Image.Dither.NONE), "PNG"
    )


def render_bold_canvas(ink: _Ink, rng: np.random.Generator) -> bytes:
    """A thick pen on the drawing canvas: the strokes grown by 2-6 pixels before export."""
    coverage = Image.fromarray(_place(ink, (280, 280), rng))
    for _ in range(int(rng.integers(1, 4))):
        coverage = coverage.filter(ImageFilter.MaxFilter(5))
    rgba = np.zeros((280, 280, 4), dtype=np.uint8)
    rgba[..., 3] = (np.clip(np.asarray(coverage), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return _encode(Image.fromarray(rgba), "PNG")


def render_thumbnail(ink: _Ink, rng: np.random.Generator) -> bytes:
    """The ink filling a 16x16 grey scan edge to edge (longer side 16 pixels), dark on light (PNG): coarse, bold
    strokes."""
    rows, columns = np.nonzero(ink > 0.05)
    if len(rows):
        ink = ink[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1]
    side = 16
    scale = side / max(ink.shape)
    size = (max(1, round(ink.shape[1] * scale)), max(1, round(ink.shape[0] * scale)))
    glyph = np.clip(np.asarray(Image.fromarray(ink).resize(size, Image.Resampling.BOX)), 0.0, 1.0)
    coverage = np.zeros((side, side), dtype=np.float32)
    top, left = (side - size[1]) // 2, (side - size[0]) // 2
    coverage[top : top + size[1], left : left + size[0]] = glyph
    paper = rng.uniform(200, 255)
    pixels = paper - coverage * (paper - rng.uniform(0, 60))
    return _encode(Image.fromarray(pixels.round().astype(np.uint8)), "PNG")


def render_photo(ink: _Ink, rng: np.random.Generator) -> bytes:
    """Paper lit from one side, vignetted, with sensor noise, as a phone JPEG."""
    width, height = 320, 240
    coverage = _place(ink, (width, height), rng)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    lighting = 150.0 + 80.0 * xs / width - 40.0 * np.hypot(xs / width - 0.5, ys / height - 0.5)
    ink_level = 35.0 + 0.2 * lighting
    pixels = lighting * (1.0 - coverage) + ink_level * coverage + rng.normal(0.0, 5.0, size=(height, width))
    image = Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))
    return _encode(image, "JPEG", quality=85)


STYLES: dict[str, Renderer] = {"scan": render_scan, "canvas": render_canvas, "photo": render_photo}
CHECK_STYLES: dict[str, Renderer] = {
    **STYLES,
    "bilevel": render_bilevel,
    "bold canvas": render_bold_canvas,
    "thumbnail": render_thumbnail,
}


def through_service(
    images: npt.NDArray[np.uint8] | Sequence[_Ink], renderer: Renderer, seed: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]:
    """Each light-on-dark image (uint8, or float ink in [0, 1] of any size) rendered as an upload and prepared by
    :func:`imaging.digit.prepare_digit`.

    Returns the 28x28 model inputs and a mask of the uploads the service refuses (no digit found: blank inputs).
    """
    rng = np.random.default_rng(seed)
    prepared = np.zeros((len(images), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    refused = np.zeros(len(images), dtype=np.bool_)
    for index, image in enumerate(images):
        try:
            ink = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image
            pixels = prepare_digit(renderer(ink, rng), _LIMITS).pixels[0]
            prepared[index] = (pixels * 255.0).round().astype(np.uint8)
        except ImagingError:
            refused[index] = True
    return prepared, refused
