"""Synthetic images that are not one handwritten digit, canonicalised exactly as the service canonicalises uploads.

Three kinds, each a uint8 ``(N, 28, 28)`` array after :mod:`imaging.digit`'s crop, 20x20 box and centre of mass:
numbers composed of several handwritten digits side by side, letters and symbols rendered from the fonts that
matplotlib ships (DejaVu, STIX, Computer Modern: present wherever the project is installed), and random pen
scribbles. Every generator is seeded, so the same arguments give the same images. Glyphs that are written like
a digit (``O`` and ``0``, ``l`` and ``1``, ``S`` and ``5`` ...) are left out: no picture can tell them apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path

import matplotlib
import numpy as np
import numpy.typing as npt
from fontTools import agl
from fontTools.ttLib import TTFont
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from contract import IMAGE_SIZE
from imaging.digit import center_by_mass, crop_to_content, fit_into_box

# Letters whose handwritten form is also a digit's: O/o/Q/D (0), I/l/i/j (1), Z/z (2), S/s (5), b/G (6),
# T (7), B (8), g/q (9). Everything else in the Latin alphabet must be flagged.
DIGIT_LOOKALIKES = frozenset("OoQDIlijZzSsbGTBgq")
LETTERS = "".join(c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" if c not in DIGIT_LOOKALIKES)
# Symbols people type or draw instead of a digit. Left out as digit lookalikes: brackets, bars, slashes and the
# up and down arrows (each is written as a 1), and "$" (an S, i.e. a 5, with a stroke through it).
SYMBOLS = "?!@#%&*+=<>~^§¶€£¥±×÷√∞≈≠≤≥∑∏∫✓✗♥★☺→←"
# Training fonts and held-out fonts are disjoint families, so the held-out figures measure unseen lettering. Adding
# 14 faces from Debian's Liberation and URW fonts was tried and not published: the check flagged fewer numbers and
# glyphs, those in unseen faces too, at the same share of digits passing
# (reports/training/check_fonts_unpublished.json).
TRAIN_FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
)
HELD_OUT_FONTS = ("DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "cmr10.ttf", "cmss10.ttf")

# Glyphs and scribbles are drawn on a canvas of this side, ample for the 20-pixel box they are scaled into.
_CANVAS_PIXELS = 96
_FONT_PIXELS = 64
_MISSING_GLYPH = "\uffff"

Canonical = npt.NDArray[np.uint8]
_Ink = npt.NDArray[np.float32]


def canonicalise(ink: _Ink) -> Canonical:
    """Light-on-dark ink in [0, 1] to the model input, by the service's own crop, box and centring steps."""
    centred = center_by_mass(fit_into_box(crop_to_content(ink)))
    return (centred * 255.0).round().astype(np.uint8)


def _font_dir() -> Path:
    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@cache
def _font(name: str) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(_font_dir() / name), _FONT_PIXELS)


def _render(text: str, font: ImageFont.FreeTypeFont) -> Image.Image:
    canvas = Image.new("L", (_CANVAS_PIXELS * 2, _CANVAS_PIXELS * 2), 0)
    ImageDraw.Draw(canvas).text((_CANVAS_PIXELS, _CANVAS_PIXELS), text, fill=255, font=font, anchor="mm")
    return canvas


@cache
def _glyph_names(font_name: str) -> dict[int, str]:
    names: dict[int, str] = TTFont(str(_font_dir() / font_name)).getBestCmap()
    return names


def _draws_itself(font_name: str, character: str) -> bool:
    """Whether the font maps ``character`` to that character's own glyph (its Adobe Glyph List or ``uniXXXX``
    name). matplotlib's Computer Modern fonts keep TeX's layout: there "<" is "¡", "£" is "Θ" and "¶" an acute
    accent."""
    code = ord(character)
    name = _glyph_names(font_name).get(code)
    return name is not None and name in {agl.UV2AGL.get(code), f"uni{code:04X}", f"u{code:05X}"}


@cache
def glyphs_in(font_name: str, characters: str) -> tuple[str, ...]:
    """The characters ``font_name`` really draws: as themselves, not as another glyph, its missing-glyph box or
    nothing."""
    font = _font(font_name)
    missing = np.asarray(_render(_MISSING_GLYPH, font))
    drawn = []
    for character in characters:
        pixels = np.asarray(_render(character, font))
        if _draws_itself(font_name, character) and pixels.any() and not np.array_equal(pixels, missing):
            drawn.append(character)
    return tuple(drawn)


def _stroke_variant(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    # Pens are thinner or bolder than a font's strokes: grow or shrink them by a pixel or two at canvas scale.
    choice = int(rng.integers(0, 4))
    if choice == 1:
        return image.filter(ImageFilter.MaxFilter(3))
    if choice == 2:
        return image.filter(ImageFilter.MaxFilter(5))
    if choice == 3:
        return image.filter(ImageFilter.MinFilter(3))
    return image


def _ink(image: Image.Image) -> _Ink:
    return np.asarray(image, dtype=np.float32) / 255.0


def render_glyphs(count: int, fonts: Sequence[str], characters: str, seed: int) -> Canonical:
    """``count`` glyphs drawn at random from ``characters`` in ``fonts``, with random pen widths."""
    rng = np.random.default_rng(seed)
    choices = [(font, c) for font in fonts for c in glyphs_in(font, characters)]
    images = np.empty((count, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for i in range(count):
        font, character = choices[int(rng.integers(len(choices)))]
        glyph = _stroke_variant(_render(character, _font(font)), rng)
        images[i] = canonicalise(_ink(glyph))
    return images


def _bezier(points: npt.NDArray[np.float64], steps: int = 24) -> npt.NDArray[np.float64]:
    t = np.linspace(0.0, 1.0, steps)[:, None]
    p0, p1, p2 = points
    curve: npt.NDArray[np.float64] = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    return curve


def render_scribbles(count: int, seed: int) -> Canonical:
    """``count`` random pen scribbles: chains of 4 to 8 quadratic curves, or zigzags, or a few dots.

    A chain of fewer curves is often a digit (a 2, a 7, a 9): that is a digit, not a scribble.
    """
    rng = np.random.default_rng(seed)
    images = np.empty((count, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for i in range(count):
        canvas = Image.new("L", (_CANVAS_PIXELS, _CANVAS_PIXELS), 0)
        draw = ImageDraw.Draw(canvas)
        width = int(rng.integers(3, 10))
        kind = rng.random()
        if kind < 0.7:
            points = rng.uniform(8, _CANVAS_PIXELS - 8, size=(2 * int(rng.integers(4, 9)) + 1, 2))
            curve = np.concatenate([_bezier(points[j : j + 3]) for j in range(0, len(points) - 2, 2)])
            draw.line([tuple(p) for p in curve], fill=255, width=width, joint="curve")
        elif kind < 0.9:
            xs = np.linspace(10, _CANVAS_PIXELS - 10, int(rng.integers(5, 10)))
            ys = np.where(np.arange(len(xs)) % 2 == 0, 25.0, 70.0) + rng.normal(0, 5, len(xs))
            draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=255, width=width, joint="curve")
        else:
            for x, y in rng.uniform(10, _CANVAS_PIXELS - 10, size=(int(rng.integers(3, 7)), 2)):
                draw.ellipse((x - width, y - width, x + width, y + width), fill=255)
        images[i] = canonicalise(_ink(canvas))
    return images


def _tight(digit: Canonical) -> _Ink:
    ink = digit.astype(np.float32) / 255.0
    return crop_to_content(ink)


def compose_numbers(digits: Canonical, count: int, seed: int, max_digits: int = 5) -> Canonical:
    """:func:`number_inks`, canonicalised."""
    return np.stack([canonicalise(ink) for ink in number_inks(digits, count, seed, max_digits)])


def number_inks(digits: Canonical, count: int, seed: int, max_digits: int = 5) -> list[_Ink]:
    """``count`` numbers of 2 to ``max_digits`` digits drawn from ``digits`` (28x28 uint8), written side by side,
    as light-on-dark ink in [0, 1] at the digits' own scale.

    Gaps range from slightly overlapping to half a digit's height, heights vary by about 15 %, and each digit
    sits a little above or below the line, as in a handwritten number.
    """
    rng = np.random.default_rng(seed)
    numbers = []
    for _ in range(count):
        # Two- and three-digit numbers are the common case (amounts, house numbers); longer ones are rarer.
        length = int(rng.choice(np.arange(2, max_digits + 1), p=_length_weights(max_digits)))
        parts = []
        for index in rng.integers(0, len(digits), size=length):
            part = _tight(digits[index])
            scale = rng.uniform(0.85, 1.15)
            size = (max(1, round(part.shape[1] * scale)), max(1, round(part.shape[0] * scale)))
            parts.append(np.asarray(Image.fromarray(part).resize(size, Image.Resampling.BILINEAR), dtype=np.float32))
        height = max(p.shape[0] for p in parts)
        gaps = [round(rng.uniform(-0.1, 0.5) * height) for _ in parts[1:]]
        width = sum(p.shape[1] for p in parts) + sum(gaps) + height
        canvas = np.zeros((2 * height, max(width, 1)), dtype=np.float32)
        x = 0
        for j, part in enumerate(parts):
            x = max(x, 0)
            y = height // 2 + round(rng.uniform(-0.1, 0.1) * height) + (height - part.shape[0]) // 2
            region = canvas[y : y + part.shape[0], x : x + part.shape[1]]
            np.maximum(region, part[: region.shape[0], : region.shape[1]], out=region)
            x += part.shape[1] + (gaps[j] if j < len(gaps) else 0)
        numbers.append(np.clip(canvas, 0.0, 1.0))
    return numbers


def _length_weights(max_digits: int) -> npt.NDArray[np.float64]:
    weights = np.array([4.0, 3.0, 2.0, 1.0][: max_digits - 1])
    weights = np.pad(weights, (0, max(0, max_digits - 1 - len(weights))), constant_values=1.0)
    normalised: npt.NDArray[np.float64] = weights / weights.sum()
    return normalised
