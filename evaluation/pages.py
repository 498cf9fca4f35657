"""Synthetic pages: several handwritten numbers anywhere on a photographed sheet, among things that are not numbers.

:func:`compose_page` lays out 1 to ``max_numbers`` numbers (1 to 6 MNIST digits written apart, composed by
:func:`training.synthetic_lines.compose_line`, 20 to 70 px high, at random places) and the distractors a camera
sees: printed words (DejaVu Serif faces, Debian's ``fonts-dejavu-core``), ruled lines and a margin rule, tinted and
grainy paper, stains, a soft shadow, then the whole sheet under a perspective tilt of up to ``MAX_TILT_DEG``,
sensor noise, blur and JPEG. Each number's true box is the bounding box of its own ink after the tilt. Seeded: the
same glyphs and generator give the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from imaging.lines import InkArray
from training.synthetic_lines import LineVariation, compose_line

Box = tuple[float, float, float, float]
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
# Serif faces only: the digit check, which /detect consults, learned its letters from DejaVu Sans and Sans Mono.
FONTS = ("DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerifCondensed.ttf", "DejaVuSerif-Italic.ttf")
WORDS = (
    "Total", "Name", "Date", "Invoice", "amount", "Page", "Room", "Ref.", "kg", "Phone", "Note", "balance", "Street",
    "meter", "reading", "Signed", "Order", "paid", "due", "City", "Account", "weight", "Postal", "code", "and",
)  # fmt: skip
PAGE_SIZE = (800, 600)
# The camera may look at the sheet up to this far from square on (rotation in the image plane plus keystone).
MAX_TILT_DEG = 10.0
# Numbers are 1 to 6 digits, 20 to 70 px high on an 800x600 frame (a number filling a fifth of the frame's height
# down to one a camera at arm's length still resolves).
MAX_DIGITS_PER_NUMBER = 6
NUMBER_HEIGHT_PIXELS = (20.0, 70.0)
WORD_HEIGHT_PIXELS = (14, 44)
# MNIST's ink is about 20 px high; digits are scaled from there.
_MNIST_INK_PIXELS = 20.0
# Free space kept around each item, in its own heights, so items do not read as one line.
_CLEARANCE_HEIGHTS = 1.2
# Items are drawn this far inside the page, and must lie this far inside the frame once tilted (a number cut by the
# frame's edge is not one a reader could be asked to read).
_FRAME_MARGIN_PIXELS = 48
_EDGE_PIXELS = 4
_PLACEMENT_TRIES = 200
# Where a number's own ink lies, for its true box.
_INK_LEVEL = 0.3


@dataclass(frozen=True)
class PageNumber:
    """A number written on the page and its box ``(x0, y0, x1, y1)`` in the image's pixels."""

    text: str
    box: Box


@dataclass(frozen=True)
class Page:
    """A JPEG of a page and the numbers on it, in reading order of their boxes' tops."""

    data: bytes
    numbers: list[PageNumber]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _scaled(ink: InkArray, scale: float) -> InkArray:
    height, width = ink.shape
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(ink, mode="F").resize(size, Image.Resampling.BICUBIC)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def _printed_word(rng: np.random.Generator) -> InkArray:
    font = ImageFont.truetype(
        str(FONT_DIR / FONTS[int(rng.integers(len(FONTS)))]), int(rng.integers(*WORD_HEIGHT_PIXELS))
    )
    words = " ".join(WORDS[int(i)] for i in rng.integers(0, len(WORDS), int(rng.integers(1, 4))))
    x0, y0, x1, y1 = (int(v) for v in font.getbbox(words))
    image = Image.new("L", (x1 - x0 + 4, y1 - y0 + 4))
    ImageDraw.Draw(image).text((2 - x0, 2 - y0), words, fill=255, font=font)
    return np.asarray(image, dtype=np.float32) / np.float32(255.0)


def _inside(box: Box, to_image: npt.NDArray[np.float64], shape: tuple[int, int]) -> bool:
    """Whether ``box`` (page coordinates) is whole in the camera's frame, ``_EDGE_PIXELS`` clear of its edges."""
    x0, y0, x1, y1 = box
    corners = to_image @ np.array([[x0, x1, x1, x0], [y0, y0, y1, y1], [1.0, 1.0, 1.0, 1.0]])
    xs, ys = corners[0] / corners[2], corners[1] / corners[2]
    return bool(
        xs.min() >= _EDGE_PIXELS
        and ys.min() >= _EDGE_PIXELS
        and xs.max() <= shape[1] - _EDGE_PIXELS
        and ys.max() <= shape[0] - _EDGE_PIXELS
    )


def _place(
    shape: tuple[int, int],
    taken: list[Box],
    size: tuple[int, int],
    rng: np.random.Generator,
    to_image: npt.NDArray[np.float64],
) -> tuple[int, int] | None:
    """A free top-left corner for an item of ``size`` (width, height), clear of ``taken`` (grown boxes) and whole
    in the frame once seen through ``to_image``."""
    width, height = size
    frame_w, frame_h = shape[1], shape[0]
    clearance = _CLEARANCE_HEIGHTS * height
    for _ in range(_PLACEMENT_TRIES):
        x = int(
            rng.integers(_FRAME_MARGIN_PIXELS, max(_FRAME_MARGIN_PIXELS + 1, frame_w - _FRAME_MARGIN_PIXELS - width))
        )
        y = int(
            rng.integers(_FRAME_MARGIN_PIXELS, max(_FRAME_MARGIN_PIXELS + 1, frame_h - _FRAME_MARGIN_PIXELS - height))
        )
        if not _inside((x, y, x + width, y + height), to_image, shape):
            continue
        grown = (x - clearance, y - clearance, x + width + clearance, y + height + clearance)
        if all(grown[2] <= b[0] or b[2] <= grown[0] or grown[3] <= b[1] or b[3] <= grown[1] for b in taken):
            taken.append((x - clearance / 2, y - clearance / 2, x + width + clearance / 2, y + height + clearance / 2))
            return x, y
    return None


def _smooth_noise(shape: tuple[int, int], cells: int, rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """Noise in [-1, 1] that varies over about ``1 / cells`` of the frame."""
    grid = Image.fromarray(rng.uniform(-1.0, 1.0, (cells, cells)).astype(np.float32), mode="F")
    return np.asarray(grid.resize((shape[1], shape[0]), Image.Resampling.BICUBIC), dtype=np.float32)


def _homography(shape: tuple[int, int], rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """A page-to-image homography: rotation up to ``MAX_TILT_DEG``, a keystone of the same order, and a zoom that
    keeps the frame on the paper."""
    height, width = shape
    angle = math.radians(rng.uniform(-MAX_TILT_DEG, MAX_TILT_DEG))
    keystone = math.tan(math.radians(rng.uniform(-MAX_TILT_DEG, MAX_TILT_DEG))) * 0.25
    cx, cy = width / 2, height / 2
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64) - (cx, cy)
    # Keystone: the top edge narrower or wider than the bottom one.
    corners[:2, 0] *= 1 - keystone
    corners[2:, 0] *= 1 + keystone
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    target = corners @ rotation.T * 1.12 + (cx, cy)
    source = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)
    return _solve_homography(source, target)


def _solve_homography(source: npt.NDArray[np.float64], target: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    rows = []
    for (x, y), (u, v) in zip(source, target, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y, -u])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y, -v])
    _, _, vt = np.linalg.svd(np.array(rows))
    matrix: npt.NDArray[np.float64] = vt[-1].reshape(3, 3) / vt[-1, -1]
    return matrix


def _warp(layer: npt.NDArray[np.float32], to_page: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    """``layer`` (page coordinates) seen through the camera; ``to_page`` maps image points to page points."""
    coefficients = tuple((to_page / to_page[2, 2]).ravel()[:8])
    image = Image.fromarray(layer, mode="F").transform(
        (layer.shape[1], layer.shape[0]), Image.Transform.PERSPECTIVE, coefficients, Image.Resampling.BILINEAR
    )
    return np.asarray(image, dtype=np.float32)


def _true_box(ink: InkArray, x: int, y: int, to_image: npt.NDArray[np.float64]) -> Box:
    ys, xs = np.nonzero(ink > _INK_LEVEL)
    points = np.stack((xs + x + 0.5, ys + y + 0.5, np.ones(xs.size)))
    mapped = to_image @ points
    px, py = mapped[0] / mapped[2], mapped[1] / mapped[2]
    return (float(px.min()) - 0.5, float(py.min()) - 0.5, float(px.max()) + 0.5, float(py.max()) + 0.5)


def compose_page(
    glyphs: Sequence[InkArray],
    labels: Sequence[int],
    rng: np.random.Generator,
    *,
    max_numbers: int = 5,
    max_words: int = 5,
    size: tuple[int, int] = PAGE_SIZE,
    number_count: int | None = None,
    word_count: int | None = None,
) -> Page:
    """One page: 1 to ``max_numbers`` numbers of ``glyphs`` (cropped digits, light on black) and 0 to ``max_words``
    printed words (or exactly ``number_count`` and ``word_count``, as far as they fit), with every distractor of
    the module docstring, as a JPEG."""
    width, height = size
    shape = (height, width)
    handwriting = np.zeros(shape, dtype=np.float32)
    printed = np.zeros(shape, dtype=np.float32)
    taken: list[Box] = []
    to_image = _homography(shape, rng)
    placed: list[tuple[str, InkArray, int, int]] = []
    variation = LineVariation(max_rotation_deg=4.0)
    for _ in range(int(rng.integers(1, max_numbers + 1)) if number_count is None else number_count):
        length = int(rng.integers(1, MAX_DIGITS_PER_NUMBER + 1))
        chosen = rng.integers(0, len(glyphs), length)
        ink = compose_line([glyphs[i] for i in chosen], ["apart"] * (length - 1), rng, variation)
        ink = _scaled(ink, rng.uniform(*NUMBER_HEIGHT_PIXELS) / _MNIST_INK_PIXELS)
        spot = _place(shape, taken, (ink.shape[1], ink.shape[0]), rng, to_image)
        if spot is None:
            continue
        x, y = spot
        region = handwriting[y : y + ink.shape[0], x : x + ink.shape[1]]
        np.maximum(region, ink, out=region)
        placed.append(("".join(str(int(labels[i])) for i in chosen), ink, x, y))
    for _ in range(int(rng.integers(0, max_words + 1)) if word_count is None else word_count):
        word = _printed_word(rng)
        spot = _place(shape, taken, (word.shape[1], word.shape[0]), rng, to_image)
        if spot is not None:
            x, y = spot
            printed[y : y + word.shape[0], x : x + word.shape[1]] = np.maximum(
                printed[y : y + word.shape[0], x : x + word.shape[1]], word
            )
    rules = np.zeros(shape, dtype=np.float32)
    if rng.uniform() < 0.6:
        spacing = int(rng.integers(28, 52))
        thickness = int(rng.integers(1, 3))
        for row in range(int(rng.integers(10, spacing)), height, spacing):
            rules[row : row + thickness] = rng.uniform(0.35, 0.7)
        if rng.uniform() < 0.5:
            column = int(rng.integers(30, 90))
            rules[:, column : column + thickness] = rng.uniform(0.35, 0.7)
    to_page = np.linalg.inv(to_image).astype(np.float64)
    handwriting, printed, rules = (_warp(layer, to_page) for layer in (handwriting, printed, rules))
    numbers = [PageNumber(text, _true_box(ink, x, y, to_image)) for text, ink, x, y in placed]
    numbers.sort(key=lambda number: (number.box[1], number.box[0]))
    return Page(data=_photograph(handwriting, printed, rules, rng), numbers=numbers)


def _photograph(
    handwriting: npt.NDArray[np.float32],
    printed: npt.NDArray[np.float32],
    rules: npt.NDArray[np.float32],
    rng: np.random.Generator,
) -> bytes:
    """Paper, stains, shadow, the three layers of ink, sensor noise, blur and JPEG."""
    shape = handwriting.shape
    height, width = shape
    paper = np.array([rng.uniform(205, 245), rng.uniform(200, 240), rng.uniform(185, 235)], dtype=np.float32)
    grain = 6.0 * _smooth_noise(shape, 160, rng) + 10.0 * _smooth_noise(shape, 6, rng)
    rgb = np.broadcast_to(paper, (*shape, 3)) + grain[..., np.newaxis]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for _ in range(int(rng.integers(0, 3))):
        cx, cy, radius = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(15, 70)
        blot = np.clip(1.2 - np.hypot(xx - cx, yy - cy) / radius, 0.0, 1.0) * rng.uniform(20, 50)
        rgb = rgb - blot[..., np.newaxis] * np.array([0.6, 0.8, 1.0], dtype=np.float32)
    rule_colour = np.array([rng.uniform(90, 160), rng.uniform(120, 190), rng.uniform(190, 240)], dtype=np.float32)
    pen = np.array([rng.uniform(5, 60), rng.uniform(5, 60), rng.uniform(20, 120)], dtype=np.float32)
    for layer, colour in ((rules, rule_colour), (printed, np.full(3, 20.0, dtype=np.float32)), (handwriting, pen)):
        rgb = rgb - layer[..., np.newaxis] * (rgb - colour)
    light = 1.0 - rng.uniform(0.0, 0.25) * (xx / width if rng.uniform() < 0.5 else yy / height)
    if rng.uniform() < 0.5:
        # A soft shadow (a hand or the phone) over one side of the frame.
        angle = rng.uniform(0, 2 * math.pi)
        distance = (xx - width / 2) * math.cos(angle) + (yy - height / 2) * math.sin(angle)
        edge = rng.uniform(-0.3, 0.3) * min(width, height)
        light = light * (1.0 - rng.uniform(0.25, 0.5) / (1.0 + np.exp(-(distance - edge) / rng.uniform(15, 50))))
    rgb = rgb * light[..., np.newaxis] + rng.normal(0.0, rng.uniform(2.0, 5.0), (*shape, 3))
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0))
    )
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(rng.integers(75, 93)))
    return buffer.getvalue()
