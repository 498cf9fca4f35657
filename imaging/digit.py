"""One digit's canonicalisation, the way MNIST itself was made: polarity, background and noise, crop, the 20x20
box and the centre of mass in 28x28. :func:`prepare_digit` runs the whole path from bytes; each step is pure and
tested on its own.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFilter

from contract import IMAGE_SIZE
from imaging.decoding import DecodeLimits, decode_image, to_grayscale
from imaging.errors import NoDigitFoundError

# MNIST (LeCun, Cortes, Burges): each digit was size-normalised to fit a 20x20 box preserving its aspect ratio,
# which anti-aliasing left with grey levels, then translated so its centre of mass sits at the centre of the 28x28
# field. Measured on the official files, that centre is (14, 14) in pixel-index coordinates (mean 14.00, 14.01)
# and every digit's centre lies within half a pixel of it, i.e. the shift was by whole pixels; the longer side of
# the non-zero box is 20 pixels in 99.98 % of the digits.
DIGIT_BOX_PIXELS = 20
CENTRE_OF_MASS = IMAGE_SIZE / 2

# Analysis runs with the longer side in [WORK_SIDE_PIXELS, 2 * WORK_SIDE_PIXELS): plenty for a 20-pixel box,
# and it bounds the cost of a 12-megapixel photo (JPEGs are decoded at 1/2 to 1/8 scale by libjpeg directly).
WORK_SIDE_PIXELS = 256
# Ink is rare: the darkest and brightest 0.5 % of pixels tell which side of the background it lies on.
INK_TAIL_FRACTION = 0.005
# ... but never more than this many pixels: a digit 12 pixels tall on a large page is a few dozen pixels of ink,
# far fewer than 0.5 % of the page, and its tail must still be ink, not the paper's noise.
INK_TAIL_PIXELS = 16
# Ink touching the image border (a tight crop) hides the paper from the border statistics; on evenly lit paper
# the image is first surrounded by this many pixels of its own paper level.
PAPER_MARGIN_PIXELS = 2
PAPER_QUANTILE = 0.25
# What crosses the border counts as ink when its median is at least this far from the paper towards the ink's core:
# strokes cross a tight crop at nearly full ink, where paper under uneven light climbs towards it only part way.
INK_CROSSING_FRACTION = 0.75
# A border whose 5th..95th percentiles span at most this many grey levels is a flat background (scan, canvas);
# anything wider (lighting gradient, vignetting) gets a spatial background estimate on a coarse grid.
FLAT_BORDER_LEVELS = 16
BACKGROUND_GRID_CELLS = 8
# The lighting fit drops grid cells this many levels above it (ink) and refits, at most this many times.
LIGHTING_OUTLIER_LEVELS = 8
LIGHTING_FIT_ROUNDS = 3
# Background noise sigma is read from the residual's negative tail (2.5 % quantile = -2 sigma for Gaussian noise).
NOISE_QUANTILE = 0.025
NOISE_FLOOR_SIGMAS = 3.0
# What counts as a digit: ink at least this far above the background, both absolutely and in noise sigmas.
MIN_INK_CONTRAST_LEVELS = 32
MIN_INK_SNR = 6.0
# Typical ink (90th percentile of the ink class) maps to 1.0, as MNIST's stroke cores are saturated.
INK_LEVEL_QUANTILE = 0.9
# Specks: ink cut off from the digit by empty rows or columns and holding under 2 % of all ink.
SPECK_MASS_FRACTION = 0.02
# On a noisy background, faint pixels count as anti-aliased edges only within this many pixels of confident ink.
HALO_PIXELS = 2

_SMALL_HISTOGRAM_PIXELS = 4096
_LEVELS = np.arange(256)

GreyArray = npt.NDArray[np.uint8]
InkArray = npt.NDArray[np.float32]
_Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class PreparedDigit:
    """The model input, ``(1, 28, 28)`` float32 in [0, 1], white digit on black, centred by mass; and, when asked
    for, the same pixels as an 8-bit grey PNG (the debug view of what the models saw).

    Plain NumPy and bytes, so it crosses a process boundary cheaply: preprocessing runs in worker processes.
    """

    pixels: InkArray
    png: bytes | None = None


def grey_png(pixels: InkArray) -> bytes:
    """Pixels in [0, 1] as an 8-bit grey PNG: the debug view, and the upload a client would send of them."""
    buffer = io.BytesIO()
    Image.fromarray((pixels * 255.0).round().astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _histogram(values: GreyArray) -> npt.NDArray[np.intp]:
    if values.size < _SMALL_HISTOGRAM_PIXELS:
        return np.bincount(values.ravel(), minlength=256)
    # On whole images Pillow's C histogram is several times faster than np.bincount.
    return np.asarray(Image.fromarray(values).histogram(), dtype=np.intp)


def shrink_to_work_size(grey: Image.Image, work_side_pixels: int = WORK_SIDE_PIXELS) -> Image.Image:
    """Box-average by an integer factor so the longer side is below twice ``work_side_pixels``."""
    factor = max(grey.size) // work_side_pixels
    return grey.reduce(factor) if factor > 1 else grey


def _quantiles(histogram: npt.NDArray[np.intp], *fractions: float) -> list[int]:
    cumulative = np.cumsum(histogram)
    levels: list[int] = np.searchsorted(cumulative, np.multiply(fractions, cumulative[-1])).tolist()
    return levels


def _border(grey: GreyArray) -> GreyArray:
    return np.concatenate((grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]))


def _ink_tail(grey: GreyArray) -> float:
    """The fraction of the histogram at either end that is taken to be ink (see ``INK_TAIL_PIXELS``)."""
    return min(INK_TAIL_FRACTION, INK_TAIL_PIXELS / grey.size)


def invert_if_light_background(grey: GreyArray) -> GreyArray:
    """Return the image with light ink on a dark background (MNIST polarity), inverting it if needed.

    The background level is the border's median; the ink is whichever tail of the histogram (darkest or
    brightest 0.5 %) lies farther from it. This holds under gradients and for a digit filling most of the frame.
    """
    (background,) = _quantiles(_histogram(_border(grey)), 0.5)
    tail = _ink_tail(grey)
    darkest, brightest = _quantiles(_histogram(grey), tail, 1.0 - tail)
    if background - darkest > brightest - background:
        return np.subtract(255, grey, dtype=np.uint8)
    return grey


def _estimate_background(grey: GreyArray) -> GreyArray:
    """The lighting of the paper under the ink: a quadratic surface fitted to a coarse grid of cell levels.

    Cell means, then a grey opening (3x3 min, then max): the min drops cells brightened by ink, the max restores
    the level of a lighting gradient that the min alone would underestimate. Lighting across a photographed page
    (light from one side, vignetting) is smooth, so a quadratic in x and y fits it, also up to the image's edges
    where interpolating the grid would flatten it; cells still lifted by ink (where dense strokes meet the border)
    stand above the fit and are dropped from the next round.
    """
    height, width = grey.shape
    cell = max(1, -(-max(height, width) // BACKGROUND_GRID_CELLS))
    opened = Image.fromarray(grey).reduce(cell).filter(ImageFilter.MinFilter(3)).filter(ImageFilter.MaxFilter(3))
    levels = np.asarray(opened, dtype=np.float64)
    centres_y = (np.arange(levels.shape[0]) + 0.5) * cell / height
    centres_x = (np.arange(levels.shape[1]) + 0.5) * cell / width
    design = _quadratic_terms(*np.meshgrid(centres_y, centres_x, indexing="ij"))
    values = levels.ravel()
    kept = np.ones(values.size, dtype=bool)
    for _ in range(LIGHTING_FIT_ROUNDS):
        coefficients = np.linalg.lstsq(design[kept], values[kept], rcond=None)[0]
        refined = values - design @ coefficients <= LIGHTING_OUTLIER_LEVELS
        if refined.sum() < design.shape[1] or (refined == kept).all():
            break
        kept = refined
    # Evaluated by broadcasting a column of y against a row of x: no (pixels x 6) matrix of terms.
    y = ((np.arange(height) + 0.5) / height)[:, np.newaxis]
    x = ((np.arange(width) + 0.5) / width)[np.newaxis, :]
    c0, c1, c2, c3, c4, c5 = coefficients
    surface: npt.NDArray[np.float64] = c0 + c1 * x + c2 * y + c3 * x * x + c4 * x * y + c5 * y * y
    return np.clip(surface, 0, 255).round().astype(np.uint8)


def _quadratic_terms(y: npt.NDArray[np.float64], x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``(N, 6)`` terms 1, x, y, x^2, xy, y^2 of the points' coordinates."""
    x, y = x.ravel(), y.ravel()
    return np.stack((np.ones_like(x), x, y, x * x, x * y, y * y), axis=1)


def _otsu_threshold(histogram: npt.NDArray[np.intp]) -> int:
    """The level that maximises the between-class variance (Otsu 1979); class 0 is ``<= level``."""
    counts = np.cumsum(histogram, dtype=np.float64)
    moments = np.cumsum(histogram * _LEVELS[: histogram.size], dtype=np.float64)
    # Where one class is empty the numerator is 0 as well, so a tiny denominator leaves those levels at 0.
    between = (moments[-1] * counts - counts[-1] * moments) ** 2 / np.maximum(counts * (counts[-1] - counts), 1.0)
    return int(np.argmax(between))


def _main_extent(strong: _Mask, axis: int) -> tuple[int, int]:
    """First and last+1 row (``axis=1``) or column (``axis=0``) of the runs of occupied lines, separated by
    empty ones, that hold a non-negligible share of the ink."""
    occupied: _Mask = np.any(strong, axis=axis)
    first, last = int(occupied.argmax()), occupied.size - int(occupied[::-1].argmax())
    if occupied[first:last].all():
        return first, last
    profile = strong.sum(axis=axis)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], occupied, [0])).astype(np.int8)))
    starts, ends = edges[::2], edges[1::2]
    cumulative = np.concatenate(([0], np.cumsum(profile)))
    masses = cumulative[ends] - cumulative[starts]
    kept = masses >= SPECK_MASS_FRACTION * cumulative[-1]
    if not kept.any():
        kept = masses == masses.max()
    return int(starts[kept][0]), int(ends[kept][-1])


def _dilate(mask: _Mask, radius: int) -> _Mask:
    grown = mask.copy()
    for shift in range(1, radius + 1):
        grown[shift:] |= mask[:-shift]
        grown[:-shift] |= mask[shift:]
    result = grown.copy()
    for shift in range(1, radius + 1):
        result[:, shift:] |= grown[:, :-shift]
        result[:, :-shift] |= grown[:, shift:]
    return result


def pad_with_paper(grey: GreyArray) -> GreyArray:
    """Surround a light-on-dark image whose ink touches the border with ``PAPER_MARGIN_PIXELS`` of its paper level.

    Ink and paper are split by Otsu's threshold over the whole image. When what crosses the border is ink (at
    least ``INK_CROSSING_FRACTION`` of the way from the paper to the brightest strokes, in runs of pixels rather
    than single noisy ones) and the paper seen on the four sides is at one level (within ``FLAT_BORDER_LEVELS``:
    a scan, a canvas, a dataset image), the margin gives the background statistics of :func:`remove_background`
    real paper to measure, as if the digit had been cropped with some room around it. Anything else (paper
    brightening towards an edge under uneven light, a photo, noise) is returned as it is: there the background
    comes from a lighting fit.
    """
    histogram = _histogram(grey)
    threshold = _otsu_threshold(histogram)
    border = _border(grey)
    crossing, paper = border[border > threshold], border[border <= threshold]
    if not crossing.size or not paper.size:
        return grey
    # Paper pixels next to strokes carry their anti-aliased edges: the lowest quarter of the paper is paper alone.
    sides = (grey[0], grey[-1], grey[:, 0], grey[:, -1])
    levels = [np.percentile(paper, 100 * PAPER_QUANTILE) for side in sides if (paper := side[side <= threshold]).size]
    level = float(np.percentile(border[border <= threshold], 100 * PAPER_QUANTILE))
    (ink_core,) = _quantiles(histogram, 1.0 - _ink_tail(grey))
    uneven = max(levels) - min(levels) > FLAT_BORDER_LEVELS
    faint = np.median(crossing) - level < INK_CROSSING_FRACTION * (ink_core - level)
    # A stroke crosses the border as a run of pixels; noise that crosses the threshold does so pixel by pixel.
    runs = [side > threshold for side in sides]
    in_runs = sum(int((run[1:] & run[:-1]).sum()) for run in runs)
    if uneven or faint or 2 * in_runs < crossing.size:
        return grey
    return np.pad(grey, PAPER_MARGIN_PIXELS, constant_values=round(level))


def _difference_noise_sigma(grey: GreyArray) -> float | None:
    """Noise sigma from the median absolute difference of horizontal neighbours (robust to edges and gradients):
    for Gaussian noise of sigma s the difference has sigma s * sqrt(2), and its median magnitude is 0.6745 of that.
    None for an image one pixel wide.
    """
    differences = np.abs(np.diff(grey.astype(np.int16), axis=1)).astype(np.uint8)
    if not differences.size:
        return None
    # The exact median (the mean of the two middle values for an even count) from the 256-level histogram: a
    # sort of every difference cost several milliseconds on a photo.
    cumulative = np.cumsum(_histogram(differences))
    middle = np.searchsorted(cumulative, [(differences.size - 1) // 2 + 1, differences.size // 2 + 1])
    return float(middle.mean()) / (0.6745 * float(np.sqrt(2.0)))


def remove_background(grey: GreyArray) -> InkArray:
    """Ink intensity in [0, 1] on a zero background, from a light-on-dark grey image.

    Subtracts the background (the border's level, or a coarse spatial estimate under a gradient), splits ink from
    background with Otsu's threshold, drops isolated specks, and keeps the grey levels of anti-aliased edges within
    ``HALO_PIXELS`` of confident ink, scaled so that typical ink is 1.0. Raises :class:`NoDigitFoundError` when
    nothing stands out from the background by ``MIN_INK_CONTRAST_LEVELS`` and ``MIN_INK_SNR`` noise sigmas.
    """
    low, level, high = _quantiles(_histogram(_border(grey)), 0.05, 0.5, 0.95)
    if high - low <= FLAT_BORDER_LEVELS:
        # Flat background: every statistic comes from the one histogram, measured as distance from its level.
        signal, offset = grey, level
        histogram = _histogram(grey)
        above = histogram[level:].copy()
        above[0] += histogram[:level].sum()
        below = histogram[level::-1].copy()
        below[0] += histogram[level + 1 :].sum()
    else:
        background = _estimate_background(grey)
        lifted = np.maximum(grey, background)
        signal, offset = lifted - background, 0
        above, below = _histogram(signal), _histogram(lifted - grey)
    # Ink lies above the background, so the spread below it is noise: its 97.5 % quantile is 2 sigma.
    (two_sigma,) = _quantiles(below, 1.0 - NOISE_QUANTILE)
    if offset == 0 and (sigma := _difference_noise_sigma(grey)) is not None:
        # Where dense ink meets the border, the coarse background estimate rises above the paper around it and
        # that residual reads as noise; the noise of neighbouring pixels' differences is immune to both.
        two_sigma = min(two_sigma, round(2.0 * sigma))
    floor = NOISE_FLOOR_SIGMAS * two_sigma / 2.0
    threshold = max(_otsu_threshold(above), int(floor))
    ink = above[threshold + 1 :]
    if not ink.any():
        raise NoDigitFoundError
    ink_level = threshold + 1 + _quantiles(ink, INK_LEVEL_QUANTILE)[0]
    if ink_level < max(MIN_INK_CONTRAST_LEVELS, MIN_INK_SNR * two_sigma / 2.0):
        raise NoDigitFoundError
    strong = signal > offset + threshold
    # Specks: a run of rows or columns, cut off from the rest by empty ones, that holds under 2 % of the ink.
    top, bottom = _main_extent(strong, axis=1)
    left, right = _main_extent(strong, axis=0)
    region = (
        slice(max(top - HALO_PIXELS, 0), bottom + HALO_PIXELS),
        slice(max(left - HALO_PIXELS, 0), right + HALO_PIXELS),
    )
    scale = np.float32(1.0 / (ink_level - floor))
    ramp = np.clip((signal[region].astype(np.float32) - np.float32(offset + floor)) * scale, 0.0, 1.0)
    if floor > 0:
        # On a noisy background, faint pixels away from confident ink are noise; on a noise-free one everything
        # above the background within the region is the digit's own anti-aliasing.
        ramp *= _dilate(strong[region], HALO_PIXELS)
    result = np.zeros(grey.shape, dtype=np.float32)
    result[region] = ramp
    return result


def crop_to_content(ink: InkArray) -> InkArray:
    """The bounding box of the non-zero pixels; :class:`NoDigitFoundError` if there are none."""
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        raise NoDigitFoundError
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def fit_into_box(ink: InkArray, box_pixels: int = DIGIT_BOX_PIXELS) -> InkArray:
    """Scale so the longer side is ``box_pixels``, keeping the aspect ratio, with an anti-aliasing filter."""
    height, width = ink.shape
    scale = box_pixels / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(ink).resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def center_by_mass(digit: InkArray, size_pixels: int = IMAGE_SIZE) -> InkArray:
    """Paste into a ``size_pixels`` square (no smaller than ``digit``), shifted by whole pixels so the centre of
    mass lands nearest ``size_pixels / 2`` in both axes: MNIST's (14, 14).

    The shift is clamped so no ink is cut off; only a very lopsided digit can end up more than half a pixel away.
    """
    height, width = digit.shape
    mass = float(digit.sum())
    if mass <= 0.0:
        raise NoDigitFoundError
    target = size_pixels / 2
    centre_row = float(digit.sum(axis=1) @ np.arange(height)) / mass
    centre_col = float(digit.sum(axis=0) @ np.arange(width)) / mass
    top = min(max(round(target - centre_row), 0), size_pixels - height)
    left = min(max(round(target - centre_col), 0), size_pixels - width)
    canvas = np.zeros((size_pixels, size_pixels), dtype=np.float32)
    canvas[top : top + height, left : left + width] = digit
    return canvas


def prepare_digit(data: bytes, limits: DecodeLimits, *, with_png: bool = False) -> PreparedDigit:
    """Decode ``data`` and run every step. Pure and blocking: the service runs it in a worker process."""
    image = decode_image(data, limits, draft_side_pixels=WORK_SIDE_PIXELS)
    grey = np.asarray(shrink_to_work_size(to_grayscale(image)), dtype=np.uint8)
    ink = remove_background(pad_with_paper(invert_if_light_background(grey)))
    centred = center_by_mass(fit_into_box(crop_to_content(ink)))
    return PreparedDigit(pixels=centred[np.newaxis], png=grey_png(centred) if with_png else None)
