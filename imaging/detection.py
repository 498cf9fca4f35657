"""Finding handwritten numbers on a page: a camera frame or a photo with zero or more numbers anywhere on it.

:func:`prepare_page` is the ``/detect`` counterpart of :func:`imaging.lines.prepare_line`: decode, grey and polarity
as for one line, then

1. **lighting**: the paper's level is a low percentile of each cell of a coarse grid, interpolated bilinearly, and
   subtracted, so shadows, vignetting and large stains become flat background;
2. **ink**: pixels more than ``INK_NOISE_SIGMAS`` noise sigmas (from the residual's median) and Otsu's threshold
   above it, labelled into 8-connected components (runs of rows joined by union-find, numpy only);
3. **ruled lines**: a long component whose columns mostly hold one thin run is fitted by a straight line (up to
   any tilt a camera gives), the line's band is erased and the ink labelled again, so digits written on a rule
   come apart from it;
4. **specks and blots**: components too small to be a stroke, or taller than ``MAX_TEXT_HEIGHT_FRACTION`` of
   the image, are dropped;
5. **lines of text**: components are grouped when they overlap vertically and lie within ``JOIN_GAP_HEIGHTS``
   of their height apart, or sit one above the other (the parts of one digit);
6. each group's ink (its own components only) is normalised by :func:`imaging.lines.normalise_ink`, the reader's
   strip, with the map back to the uploaded image's pixels.

Which candidates are numbers is decided by whoever reads them (the reader's string confidence), not here: this
module proposes, in reading order (top to bottom, then left to right). Pure and blocking; numpy and Pillow only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFilter

from imaging.decoding import DecodeLimits, decode_image, to_grayscale
from imaging.digit import grey_png, shrink_to_work_size
from imaging.lines import EmptyLineError, InkArray, NormalisedLine, header_size, normalise_ink

_Mask = npt.NDArray[np.bool_]
_Ints = npt.NDArray[np.int64]
T = TypeVar("T")

# Detection runs with the longer side in [DETECT_WORK_SIDE_PIXELS, 2 * DETECT_WORK_SIDE_PIXELS): a 640x480 camera
# frame as it comes, a 12 MP photo decoded at reduced scale; a number 20 px high at this size is still read.
DETECT_WORK_SIDE_PIXELS = 640
# The paper's level: the 30th percentile of each cell (ink covers well under 70 % of any cell of this size).
BACKGROUND_CELL_PIXELS = 24
BACKGROUND_PERCENTILE = 30.0
# Ink stands this many noise sigmas above the paper (a sigma from the residual's median absolute value).
INK_NOISE_SIGMAS = 5.0
# Nothing on the page stands out by less than this (grey levels): a blank page has no ink at all.
MIN_INK_CONTRAST_LEVELS = 40.0
# A stroke is at least this many pixels and this tall; smaller components are dust, paper grain or punctuation.
MIN_COMPONENT_PIXELS = 12
MIN_COMPONENT_HEIGHT_PIXELS = 6
# Taller than this share of the image is a blot, an edge of the paper or a shadow's edge, not a written character.
MAX_TEXT_HEIGHT_FRACTION = 0.5
# A group shorter than this is too small to read (a number 8 px high holds no readable digit at this size).
MIN_LINE_HEIGHT_PIXELS = 10
# Ruled lines: at least this share of the image wide and this many times wider than tall to be looked at; then
# at least RULE_MIN_THIN_SHARE of its columns must hold a thin run lying on one straight line.
RULE_MIN_WIDTH_FRACTION = 0.15
RULE_MIN_ASPECT = 3.0
RULE_MIN_THIN_SHARE = 0.6
RULE_MAX_THICKNESS_PIXELS = 6.0
# Grouping: two components are in one line when they overlap vertically by this share of the shorter one and the
# horizontal gap is at most JOIN_GAP_HEIGHTS of the taller one (digits written apart leave under half a height);
# or when they overlap horizontally by this share of the narrower one with a vertical gap of at most
# STACK_GAP_HEIGHTS (a 5's detached bar above its body).
JOIN_OVERLAP_SHARE = 0.3
JOIN_GAP_HEIGHTS = 0.6
STACK_GAP_HEIGHTS = 0.3
# A group is cut out with its ink's anti-aliased edge: this many pixels around its components.
HALO_PIXELS = 2
# Two results are on one row of the reading order when they overlap vertically by half the shorter one.
ROW_OVERLAP_SHARE = 0.5


@dataclass(frozen=True)
class Components:
    """Connected components of a mask: per component its box ``(x0, y0, x1, y1)`` (ends exclusive) and pixel
    count, and the mask's runs (``row, start, end``) with the component each belongs to."""

    boxes: _Ints
    areas: _Ints
    run_rows: _Ints
    run_starts: _Ints
    run_ends: _Ints
    run_labels: _Ints

    def __len__(self) -> int:
        return len(self.areas)

    def mask_of(self, labels: _Ints, shape: tuple[int, int]) -> _Mask:
        """The pixels of the components ``labels``."""
        mask = np.zeros(shape, dtype=bool)
        chosen = np.isin(self.run_labels, labels)
        for row, start, end in zip(self.run_rows[chosen], self.run_starts[chosen], self.run_ends[chosen], strict=True):
            mask[row, start:end] = True
        return mask


def label_components(mask: _Mask) -> Components:
    """8-connected components of ``mask``: runs of each row, joined to the overlapping runs of the next row by a
    vectorised union-find (hooking to the smaller root, then pointer jumping until every edge is settled)."""
    height, width = mask.shape
    edges = np.diff(np.pad(mask, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    rows, starts = np.nonzero(edges == 1)
    ends = np.nonzero(edges == -1)[1]
    count = len(rows)
    stride = width + 2
    # Run b in the next row touches run a (8-connected) when b.start <= a.end and b.end >= a.start.
    first = np.searchsorted(rows * stride + ends, (rows + 1) * stride + starts, side="left")
    last = np.searchsorted(rows * stride + starts, (rows + 1) * stride + ends, side="right")
    pairs = np.maximum(last - first, 0)
    a = np.repeat(np.arange(count), pairs)
    b = np.arange(pairs.sum()) - np.repeat(np.cumsum(pairs) - pairs, pairs) + np.repeat(first, pairs)
    parent = np.arange(count)
    while a.size:
        low = np.minimum(parent[a], parent[b])
        np.minimum.at(parent, parent[a], low)
        np.minimum.at(parent, parent[b], low)
        while not np.array_equal(jumped := parent[parent], parent):
            parent = jumped
        unsettled = parent[a] != parent[b]
        if not unsettled.any():
            break
        a, b = a[unsettled], b[unsettled]
    roots, labels = np.unique(parent, return_inverse=True)
    boxes = np.empty((len(roots), 4), dtype=np.int64)
    boxes[:, :2], boxes[:, 2:] = max(width, height), 0
    np.minimum.at(boxes[:, 0], labels, starts)
    np.minimum.at(boxes[:, 1], labels, rows)
    np.maximum.at(boxes[:, 2], labels, ends)
    np.maximum.at(boxes[:, 3], labels, rows + 1)
    areas = np.bincount(labels, weights=ends - starts, minlength=len(roots)).astype(np.int64)
    return Components(boxes, areas, rows, starts, ends, labels.astype(np.int64))


def _cell_percentile(grey: npt.NDArray[np.uint8], percentile: float) -> npt.NDArray[np.float32]:
    """A percentile of each cell of a coarse grid over ``grey``, bilinearly interpolated to every pixel."""
    height, width = grey.shape
    cells_y, cells_x = max(1, round(height / BACKGROUND_CELL_PIXELS)), max(1, round(width / BACKGROUND_CELL_PIXELS))
    cropped = grey[: height - height % cells_y, : width - width % cells_x]
    blocks = cropped.reshape(cells_y, cropped.shape[0] // cells_y, cells_x, cropped.shape[1] // cells_x)
    levels = np.percentile(blocks.transpose(0, 2, 1, 3).reshape(cells_y, cells_x, -1), percentile, axis=2)
    grid = Image.fromarray(levels.astype(np.float32), mode="F")
    return np.asarray(grid.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def _noise_sigma(residual: npt.NDArray[np.float32]) -> float:
    """The paper's noise from the residual's median absolute value (ink is too sparse to move it), at least half
    a grey level."""
    return float(np.median(np.abs(residual))) / 0.6745 + 0.5


def to_light_ink(grey: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """``grey`` with light ink on dark paper: inverted when more pixels stand out darker than the local paper
    than lighter. Unlike one digit's border test, this holds when a shadow or a dark table covers the border."""
    residual = grey.astype(np.float32) - _cell_percentile(grey, 50.0)
    sigma = _noise_sigma(residual)
    darker = int(np.count_nonzero(residual < -INK_NOISE_SIGMAS * sigma))
    lighter = int(np.count_nonzero(residual > INK_NOISE_SIGMAS * sigma))
    return np.subtract(255, grey, dtype=np.uint8) if darker > lighter else grey


def _otsu(values: npt.NDArray[np.float32]) -> float:
    histogram, bin_edges = np.histogram(values, bins=64)
    weights = np.cumsum(histogram).astype(np.float64)
    centres = (bin_edges[:-1] + bin_edges[1:]) / 2
    sums = np.cumsum(histogram * centres)
    total, grand = weights[-1], sums[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (grand * weights - total * sums) ** 2 / (weights * (total - weights))
    return float(bin_edges[int(np.nanargmax(between[:-1])) + 1])


def ink_signal(light: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.float32], float, float]:
    """Ink above the paper (grey levels, 0 on the paper), the threshold that separates ink, and the ink's
    typical level; the threshold is infinite when nothing stands out (a blank page)."""
    residual = light.astype(np.float32) - _cell_percentile(light, BACKGROUND_PERCENTILE)
    sigma = _noise_sigma(residual)
    signal = np.maximum(residual, 0.0)
    candidates = signal[signal > INK_NOISE_SIGMAS * sigma]
    if candidates.size == 0 or float(candidates.max()) < MIN_INK_CONTRAST_LEVELS:
        return signal, float("inf"), 0.0
    threshold = max(INK_NOISE_SIGMAS * sigma, min(_otsu(candidates), MIN_INK_CONTRAST_LEVELS))
    strong = signal[signal > threshold]
    return signal, threshold, float(np.percentile(strong, 90)) if strong.size else threshold


def _rule_band(components: Components, label: int) -> tuple[float, float, float] | None:
    """``(slope, intercept, half_thickness)`` of the straight thin line that most of the component's columns hold
    (a ruled line, possibly with handwriting crossing it), or None when the component is not one."""
    own = components.run_labels == label
    rows, starts, ends = components.run_rows[own], components.run_starts[own], components.run_ends[own]
    x0, x1 = int(starts.min()), int(ends.max())
    counts = np.zeros(x1 - x0, dtype=np.float64)
    row_sums = np.zeros(x1 - x0, dtype=np.float64)
    for row, start, end in zip(rows, starts, ends, strict=True):
        counts[start - x0 : end - x0] += 1
        row_sums[start - x0 : end - x0] += row
    thin = (counts > 0) & (counts <= RULE_MAX_THICKNESS_PIXELS)
    if thin.sum() < RULE_MIN_THIN_SHARE * (x1 - x0):
        return None
    columns = np.flatnonzero(thin).astype(np.float64) + x0 + 0.5
    centres = row_sums[thin] / counts[thin] + 0.5
    slope, intercept = np.polyfit(columns, centres, 1)
    if float(np.median(np.abs(centres - (slope * columns + intercept)))) > 1.5:
        return None
    return float(slope), float(intercept), float(np.median(counts[thin])) / 2 + 1.0


def remove_rules(mask: _Mask, components: Components) -> tuple[_Mask, bool]:
    """``mask`` without the ruled lines among ``components``; whether any was found."""
    height, width = mask.shape
    box_widths = components.boxes[:, 2] - components.boxes[:, 0]
    box_heights = components.boxes[:, 3] - components.boxes[:, 1]
    long = np.flatnonzero(
        (box_widths >= RULE_MIN_WIDTH_FRACTION * width) & (box_widths >= RULE_MIN_ASPECT * box_heights)
    )
    cleaned, found = mask, False
    ys, xs = np.mgrid[0:height, 0:width]
    for label in long:
        band = _rule_band(components, int(label))
        if band is None:
            continue
        slope, intercept, half = band
        x0, y0, x1, y1 = components.boxes[label]
        region = (slice(y0, y1), slice(x0, x1))
        on_rule = np.abs(ys[region] + 0.5 - (slope * (xs[region] + 0.5) + intercept)) <= half
        if not found:
            cleaned, found = mask.copy(), True
        cleaned[region] &= ~on_rule
    return cleaned, found


def _group(boxes: _Ints) -> list[_Ints]:
    """Indices of ``boxes`` grouped into lines of text (see the module docstring), each sorted left to right."""
    count = len(boxes)
    x0, y0, x1, y1 = (boxes[:, i].astype(np.float64) for i in range(4))
    heights, widths = y1 - y0, x1 - x0
    v_overlap = np.minimum.outer(y1, y1) - np.maximum.outer(y0, y0)
    h_overlap = np.minimum.outer(x1, x1) - np.maximum.outer(x0, x0)
    taller = np.maximum.outer(heights, heights)
    side_by_side = (v_overlap >= JOIN_OVERLAP_SHARE * np.minimum.outer(heights, heights)) & (
        -h_overlap <= JOIN_GAP_HEIGHTS * taller
    )
    stacked = (h_overlap >= JOIN_OVERLAP_SHARE * np.minimum.outer(widths, widths)) & (
        -v_overlap <= STACK_GAP_HEIGHTS * taller
    )
    joined = side_by_side | stacked
    parent = list(range(count))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(joined, 1)), strict=True):
        parent[root(int(i))] = root(int(j))
    groups: dict[int, list[int]] = {}
    for i in range(count):
        groups.setdefault(root(i), []).append(i)
    return [np.array(sorted(members, key=lambda i: x0[i]), dtype=np.int64) for members in groups.values()]


@dataclass(frozen=True)
class Candidate:
    """One line of ink that may be a number: its box ``(x0, y0, x1, y1)`` and its reader's strip, both in the
    uploaded image's pixels (after EXIF orientation)."""

    box: tuple[float, float, float, float]
    line: NormalisedLine


def find_candidates(grey: npt.NDArray[np.uint8]) -> list[Candidate]:
    """Every line of handwriting-like ink in ``grey`` (dark ink on light paper or the reverse), in reading order,
    in ``grey``'s pixels."""
    light = to_light_ink(grey)
    signal, threshold, ink_level = ink_signal(light)
    if not np.isfinite(threshold):
        return []
    mask = signal > threshold
    components = label_components(mask)
    mask, found = remove_rules(mask, components)
    if found:
        components = label_components(mask)
    boxes, areas = components.boxes, components.areas
    heights = boxes[:, 3] - boxes[:, 1]
    kept = np.flatnonzero(
        (areas >= MIN_COMPONENT_PIXELS)
        & (heights >= MIN_COMPONENT_HEIGHT_PIXELS)
        & (heights <= MAX_TEXT_HEIGHT_FRACTION * grey.shape[0])
    )
    floor = threshold / 2
    ramp = np.clip((signal - floor) / max(ink_level - floor, 1.0), 0.0, 1.0)
    candidates = []
    for members in _group(boxes[kept]):
        labels = kept[members]
        x0, y0 = int(boxes[labels, 0].min()), int(boxes[labels, 1].min())
        x1, y1 = int(boxes[labels, 2].max()), int(boxes[labels, 3].max())
        if y1 - y0 < MIN_LINE_HEIGHT_PIXELS:
            continue
        candidate = _cut_out(components, labels, ramp, (x0, y0, x1, y1))
        if candidate is not None:
            candidates.append(candidate)
    return in_reading_order(candidates, key=lambda candidate: candidate.box)


def _cut_out(components: Components, labels: _Ints, ramp: InkArray, box: tuple[int, int, int, int]) -> Candidate | None:
    height, width = ramp.shape
    x0, y0 = max(box[0] - HALO_PIXELS, 0), max(box[1] - HALO_PIXELS, 0)
    x1, y1 = min(box[2] + HALO_PIXELS, width), min(box[3] + HALO_PIXELS, height)
    own = components.mask_of(labels, (height, width))[y0:y1, x0:x1]
    halo = Image.fromarray(own.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(2 * HALO_PIXELS + 1))
    ink = ramp[y0:y1, x0:x1] * (np.asarray(halo) > 0)
    try:
        line = normalise_ink(np.ascontiguousarray(ink, dtype=np.float32))
    except EmptyLineError:
        return None
    offset = line.to_source.copy()
    offset[:, 2] += (x0, y0)
    return Candidate(
        box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])), line=NormalisedLine(line.pixels, offset)
    )


def in_reading_order(items: list[T], key: Callable[[T], tuple[float, float, float, float]]) -> list[T]:
    """Top to bottom, then left to right: items overlapping vertically by ``ROW_OVERLAP_SHARE`` of the shorter
    one share a row (rows in order of their top, items in a row by their left edge)."""
    rows: list[list[T]] = []
    for item in sorted(items, key=lambda item: key(item)[1]):
        _x0, y0, _x1, y1 = key(item)
        for row in rows:
            ry0, ry1 = min(key(i)[1] for i in row), max(key(i)[3] for i in row)
            if min(y1, ry1) - max(y0, ry0) >= ROW_OVERLAP_SHARE * min(y1 - y0, ry1 - ry0):
                row.append(item)
                break
        else:
            rows.append([item])
    return [item for row in rows for item in sorted(row, key=lambda item: key(item)[0])]


@dataclass(frozen=True)
class PreparedPage:
    """The candidates of one upload in its own pixels, its size, and with ``with_png`` the ink the detector saw
    as an 8-bit grey PNG (the debug view). Plain NumPy: it crosses processes."""

    candidates: list[Candidate]
    size: tuple[int, int]
    png: bytes | None = None


def prepare_page(data: bytes, limits: DecodeLimits, *, with_png: bool = False) -> PreparedPage:
    """Decode ``data`` and propose every number on it. Pure and blocking: it runs in a worker process.
    Raises what :func:`decode_image` raises; a page with no ink has no candidates."""
    image = decode_image(data, limits, draft_side_pixels=DETECT_WORK_SIDE_PIXELS)
    full_size = header_size(data)
    shrunk = np.asarray(shrink_to_work_size(to_grayscale(image), DETECT_WORK_SIDE_PIXELS), dtype=np.uint8)
    scale = max(full_size) / max(shrunk.shape)
    candidates = [
        Candidate(
            box=(c.box[0] * scale, c.box[1] * scale, c.box[2] * scale, c.box[3] * scale),
            line=NormalisedLine(c.line.pixels, c.line.to_source * scale),
        )
        for c in find_candidates(shrunk)
    ]
    size = (round(shrunk.shape[1] * scale), round(shrunk.shape[0] * scale))
    png = grey_png(np.clip(ink_signal(to_light_ink(shrunk))[0] / 255.0, 0.0, 1.0)) if with_png else None
    return PreparedPage(candidates=candidates, size=size, png=png)
