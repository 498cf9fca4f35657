"""Line normalisation: a photo, scan or drawing of one line of digits to the fixed-height strip the reader takes.

The steps mirror the digit path's (decode, grey, polarity, background) and then: remove ruled lines, estimate the
line's skew from the ink, and map the ink with one affine transform onto a ``LINE_HEIGHT_PIXELS`` strip, light ink
on black. The transform is kept, so any point of the strip maps back to the uploaded image's pixels.
The training package composes synthetic lines through :func:`normalise_ink`, so train and serve share this path.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

from imaging.decoding import DecodeLimits, decode_image, to_grayscale
from imaging.digit import (
    center_by_mass,
    crop_to_content,
    fit_into_box,
    grey_png,
    invert_if_light_background,
    remove_background,
    shrink_to_work_size,
)
from imaging.errors import NoDigitFoundError

InkArray = npt.NDArray[np.float32]
_Mask = npt.NDArray[np.bool_]

# The strip the reader sees: MNIST's 28-pixel field around the line's ink, plus 2 pixels above and below so the
# first convolutions see the strokes' edges; the network pools height 32 down to 1.
LINE_HEIGHT_PIXELS = 32
INK_HEIGHT_PIXELS = 28
# Horizontal margin, so the first and last digits have context frames on both sides.
SIDE_MARGIN_PIXELS = 4
# A strip's width is a multiple of this, so that it divides into whole frames of every reader (2 or 4 columns a
# frame), and at least 4 such units wide.
WIDTH_STEP_PIXELS = 4
MIN_WIDTH_PIXELS = 4 * WIDTH_STEP_PIXELS
# A 12-digit line of touching digits is about 12 x 22 = 264 columns at this height; twice that bounds the cost.
MAX_WIDTH_PIXELS = 640
# Handwritten lines slant up to about 8 degrees; a larger estimate comes from a short or odd line and is ignored.
MAX_SKEW_DEG = 12.0
# A line shorter than this many heights is too short to tell skew from the digits' own shapes: left as it is.
MIN_SKEW_ASPECT = 2.0
# Pixels below this ink level do not count when measuring the ink's extent (anti-aliasing fringes).
EXTENT_INK_LEVEL = 0.2
# A ruled line is a run of ink at least this many line heights long and at most this fraction of it thick.
RULE_MIN_LENGTH_HEIGHTS = 2.5
RULE_MAX_THICKNESS_FRACTION = 0.2


class EmptyLineError(ValueError):
    """No ink is left to read."""


@dataclass(frozen=True)
class NormalisedLine:
    """The strip (``(LINE_HEIGHT_PIXELS, W)`` float32 in [0, 1], light ink on black) and the affine map
    ``to_source`` (2x3) that takes a strip point ``(x, y, 1)`` to the input image's ``(x, y)``."""

    pixels: InkArray
    to_source: npt.NDArray[np.float64]

    def source_box(self, x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
        """The input-image bounding box of a strip rectangle (its four corners mapped back)."""
        corners = np.array([[x0, y0, 1.0], [x1, y0, 1.0], [x0, y1, 1.0], [x1, y1, 1.0]])
        mapped = corners @ self.to_source.T
        return (
            float(mapped[:, 0].min()),
            float(mapped[:, 1].min()),
            float(mapped[:, 0].max()),
            float(mapped[:, 1].max()),
        )


def estimate_skew_deg(ink: InkArray) -> float:
    """The line's angle (degrees, positive when it rises to the right in image coordinates: y grows downwards, so
    a rising line has a negative slope), from a mass-weighted least-squares fit of the columns' centres of mass."""
    height, width = ink.shape
    mass = ink.sum(axis=0, dtype=np.float64)
    occupied = mass > 0
    if occupied.sum() < 2:
        return 0.0
    rows = np.arange(height, dtype=np.float64)
    columns = np.flatnonzero(occupied).astype(np.float64)
    weights = mass[occupied]
    centres = (rows @ ink[:, occupied].astype(np.float64)) / weights
    mean_x = float(weights @ columns) / float(weights.sum())
    mean_y = float(weights @ centres) / float(weights.sum())
    spread = float(weights @ (columns - mean_x) ** 2)
    if spread <= 0:
        return 0.0
    slope = float(weights @ ((columns - mean_x) * (centres - mean_y))) / spread
    return -math.degrees(math.atan(slope))


def remove_ruled_lines(ink: InkArray) -> InkArray:
    """Ink with long, thin horizontal runs (the rule of lined paper, a table edge) taken out.

    A rule is a band of rows, thinner than ``RULE_MAX_THICKNESS_FRACTION`` of the ink's height, each holding a run of
    ink longer than ``RULE_MIN_LENGTH_HEIGHTS`` ink heights and half the image's width. Digit strokes that cross
    the rule lose only the rule's rows.
    """
    strong = ink > EXTENT_INK_LEVEL
    ink_rows = np.flatnonzero(strong.any(axis=1))
    if ink_rows.size == 0:
        return ink
    ink_height = int(ink_rows[-1] - ink_rows[0] + 1)
    min_run = max(RULE_MIN_LENGTH_HEIGHTS * ink_height, ink.shape[1] / 2)
    rule_rows = _thin_bands(_rows_with_run(strong, min_run), max(2, round(RULE_MAX_THICKNESS_FRACTION * ink_height)))
    if not rule_rows.any():
        return ink
    cleaned = ink.copy()
    cleaned[rule_rows] = 0.0
    # The rows either side of the band hold the rule's anti-aliased edge: keep only their strong ink.
    band = np.flatnonzero(rule_rows)
    for rows in (band - 1, band + 1):
        rows = rows[(rows >= 0) & (rows < ink.shape[0])]
        cleaned[rows] = np.where(strong[rows], cleaned[rows], 0.0)
    return cleaned


def _rows_with_run(strong: _Mask, min_run: float) -> _Mask:
    """Rows holding a horizontal run of ink at least ``min_run`` pixels long."""
    found = np.zeros(strong.shape[0], dtype=bool)
    for row in np.flatnonzero(strong.sum(axis=1) >= min_run):
        edges = np.diff(np.concatenate(([0], strong[row].astype(np.int8), [0])))
        found[row] = bool(((np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)) >= min_run).any())
    return found


def _thin_bands(rows: _Mask, max_thickness: int) -> _Mask:
    """``rows`` without its runs of consecutive rows longer than ``max_thickness``."""
    kept = rows.copy()
    edges = np.flatnonzero(np.diff(np.concatenate(([0], rows.astype(np.int8), [0]))))
    for start, end in zip(edges[::2], edges[1::2], strict=True):
        if end - start > max_thickness:
            kept[start:end] = False
    return kept


def _extent(points: npt.NDArray[np.float64]) -> tuple[float, float, float, float]:
    return float(points[:, 0].min()), float(points[:, 1].min()), float(points[:, 0].max()), float(points[:, 1].max())


def normalise_ink(ink: InkArray, *, deskew: bool = True) -> NormalisedLine:
    """Deskew ``ink`` (light on black, any size) and map it onto the reader's strip with one affine transform.

    The ink's extent (pixels above ``EXTENT_INK_LEVEL``) in the deskewed frame is scaled to ``INK_HEIGHT_PIXELS``
    high, keeping the aspect ratio, then centred vertically with ``SIDE_MARGIN_PIXELS`` either side. Raises
    :class:`EmptyLineError` when there is no ink.
    """
    strong = ink > EXTENT_INK_LEVEL
    ys, xs = np.nonzero(strong)
    if xs.size == 0:
        raise EmptyLineError("no ink")
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
    region = ink[y0:y1, x0:x1]
    angle = 0.0
    if deskew and (x1 - x0) >= MIN_SKEW_ASPECT * (y1 - y0):
        measured = estimate_skew_deg(region)
        angle = measured if abs(measured) <= MAX_SKEW_DEG else 0.0
    theta = math.radians(angle)
    cos, sin = math.cos(theta), math.sin(theta)
    # In pixel coordinates (y down) a level point p lies at R p in a line rising at +angle, with
    # R = [[cos, sin], [-sin, cos]] (counter-clockwise on screen); R's transpose levels the source points.
    points = np.stack((xs.astype(np.float64) + 0.5, ys.astype(np.float64) + 0.5), axis=1)
    levelled = points @ np.array([[cos, -sin], [sin, cos]]).T
    lx0, ly0, lx1, ly1 = _extent(levelled)
    scale = INK_HEIGHT_PIXELS / max(ly1 - ly0, 1.0)
    ink_width = (lx1 - lx0) * scale
    if ink_width + 2 * SIDE_MARGIN_PIXELS > MAX_WIDTH_PIXELS:
        # A very long, flat line: fit the width instead and centre the shorter ink vertically.
        scale = (MAX_WIDTH_PIXELS - 2 * SIDE_MARGIN_PIXELS) / max(lx1 - lx0, 1.0)
        ink_width = (lx1 - lx0) * scale
    steps = math.ceil((ink_width + 2 * SIDE_MARGIN_PIXELS) / WIDTH_STEP_PIXELS)
    width = max(MIN_WIDTH_PIXELS, steps * WIDTH_STEP_PIXELS)
    left = (width - ink_width) / 2
    top = (LINE_HEIGHT_PIXELS - (ly1 - ly0) * scale) / 2
    # Strip (u, v) -> levelled frame ((u - left) / scale + lx0, (v - top) / scale + ly0) -> source via R.
    to_levelled = np.array([[1 / scale, 0.0, lx0 - left / scale], [0.0, 1 / scale, ly0 - top / scale], [0, 0, 1]])
    rotate = np.array([[cos, sin, 0.0], [-sin, cos, 0.0], [0, 0, 1]])
    to_source = (rotate @ to_levelled)[:2]
    source = Image.fromarray(np.ascontiguousarray(ink, dtype=np.float32), mode="F")
    matrix = to_source.copy()
    if scale < 1.0:
        # Shrink the whole image with Pillow's antialiasing resize first (its filter widens with the factor, as
        # MNIST's own downscaling averaged areas), so the transform below only rotates and shifts: bilinear
        # sampling alone skips pixels when shrinking, and hard-edged (bilevel) strokes come out jagged and thin.
        size = (max(1, round(source.width * scale)), max(1, round(source.height * scale)))
        factors = np.array([[source.width / size[0]], [source.height / size[1]]])
        source = source.resize(size, Image.Resampling.BOX)
        matrix = matrix / factors
        matrix[:, 2:] -= 0.5 - 0.5 / factors
    # PIL samples at pixel centres: output pixel (u, v) is read at the source point of (u + 0.5, v + 0.5).
    coefficients = matrix @ np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    coefficients[:, 2] -= 0.5
    strip = source.transform(
        (width, LINE_HEIGHT_PIXELS), Image.Transform.AFFINE, tuple(coefficients.ravel()), Image.Resampling.BILINEAR
    )
    pixels = np.clip(np.asarray(strip, dtype=np.float32), 0.0, 1.0)
    return NormalisedLine(pixels=pixels, to_source=to_source)


# -- from an upload ------------------------------------------------------------------------------------------

# Analysis runs with the longer side in [LINE_WORK_SIDE_PIXELS, 2 * LINE_WORK_SIDE_PIXELS): a line is wide and
# short, so it needs more columns than a single digit to keep its digits tall enough (a 12-digit line across
# 768 columns leaves each digit about 60 pixels).
LINE_WORK_SIDE_PIXELS = 768


@dataclass(frozen=True)
class PreparedLine:
    """The reader's input strip and the affine map from strip points to the uploaded image's pixels (after
    EXIF orientation); with ``with_png``, the strip as an 8-bit grey PNG. Plain NumPy: it crosses processes."""

    line: NormalisedLine
    png: bytes | None = None


def prepare_line(data: bytes, limits: DecodeLimits, *, with_png: bool = False) -> PreparedLine:
    """Decode ``data`` and normalise the line of digits in it. Pure and blocking: it runs in a worker process.

    Raises what :func:`decode_image` raises, and :class:`NoDigitFoundError` when no ink stands out.
    """
    image = decode_image(data, limits, draft_side_pixels=LINE_WORK_SIDE_PIXELS)
    full_size = header_size(data)
    shrunk = shrink_to_work_size(to_grayscale(image), LINE_WORK_SIDE_PIXELS)
    ink = remove_ruled_lines(remove_background(invert_if_light_background(np.asarray(shrunk, dtype=np.uint8))))
    try:
        line = normalise_ink(ink)
    except EmptyLineError:
        raise NoDigitFoundError from None
    # Work pixels to uploaded pixels: the shrink factor and JPEG draft scale together, the same on both axes.
    scale = max(full_size) / max(shrunk.size)
    scaled = NormalisedLine(pixels=line.pixels, to_source=line.to_source * scale)
    return PreparedLine(line=scaled, png=grey_png(line.pixels) if with_png else None)


def header_size(data: bytes) -> tuple[int, int]:
    """The uploaded image's size from its header (the decoded image may be a reduced JPEG draft). Only the longer
    side is used, which EXIF orientation does not change; :func:`decode_image` has checked the pixel limit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        size: tuple[int, int] = Image.open(io.BytesIO(data)).size
    return size


# -- digits of a read line -----------------------------------------------------------------------------------


def ink_box(pixels: InkArray, first_column: int, end_column: int) -> tuple[float, float, float, float]:
    """The strip rectangle ``(x0, y0, x1, y1)`` around the ink between two columns (the whole band when the
    columns hold no ink above the fringe level)."""
    band = pixels[:, first_column:end_column] > EXTENT_INK_LEVEL
    rows, cols = np.flatnonzero(band.any(axis=1)), np.flatnonzero(band.any(axis=0))
    if rows.size == 0:
        return float(first_column), 0.0, float(end_column), float(pixels.shape[0])
    return (
        float(first_column + cols[0]),
        float(rows[0]),
        float(first_column + cols[-1] + 1),
        float(rows[-1] + 1),
    )


def digit_image(pixels: InkArray, first_column: int, end_column: int) -> InkArray:
    """The ink between two columns as an MNIST-style 28x28 digit (the debug view of one read digit)."""
    band = np.ascontiguousarray(pixels[:, first_column:end_column])
    if not (band > 0).any():
        return np.zeros((28, 28), dtype=np.float32)
    return center_by_mass(fit_into_box(crop_to_content(band)))
