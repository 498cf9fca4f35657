"""Finding handwritten numbers on a page: a camera frame or a photo with zero or more numbers anywhere on it.

:func:`prepare_page` is the ``/detect`` counterpart of :func:`imaging.lines.prepare_line`: decode, grey and polarity
as for one line, then

1. **lighting**: the paper's level is a low percentile of each cell of a coarse grid, interpolated bilinearly, and
   subtracted, so shadows, vignetting and large stains become flat background;
2. **ink**: pixels more than ``INK_NOISE_SIGMAS`` noise sigmas (from the residual's median) and Otsu's threshold
   above it, labelled into 8-connected components (runs of rows joined by union-find, numpy only);
3. **ruled lines**: ink (at half the ink's threshold, where a pale rule shows whole) counted along every row at
   every slope a camera gives (a Hough transform restricted to near-horizontal lines); a thin band holding a long
   line's worth of ink is a rule, and its rows are erased, except where a stroke crosses it, so digits written on
   a rule come apart from it whole; then the same across the other axis (a margin line);
4. **specks, blots and edges**: components too small to be a stroke, taller than ``MAX_TEXT_HEIGHT_FRACTION`` of
   the image, or touching its border (cut off by the frame: not readable whole) are dropped;
5. **lines of text**: components are grouped when they overlap vertically and lie within ``JOIN_GAP_HEIGHTS``
   of their height apart, or sit one above the other (the parts of one digit), and again on the groups' boxes
   until nothing more joins;
6. each group's ink (its own components only) is normalised by :func:`imaging.lines.normalise_ink`, the reader's
   strip, with the map back to the uploaded image's pixels, and each of its characters (components overlapping
   horizontally: a digit's pieces) is canonicalised as one uploaded digit is (for the digit check).

Which candidates are numbers is decided by whoever reads them (``/detect``: the reader's string confidence and the
digit check's verdict on the characters), not here: this module proposes, in reading order (top to bottom, then
left to right). Pure and blocking; numpy and Pillow only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFilter

from contract import IMAGE_SIZE
from imaging.decoding import DecodeLimits, decode_image, to_grayscale
from imaging.digit import center_by_mass, crop_to_content, fit_into_box, grey_png, shrink_to_work_size
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
# Components reaching this close to the frame's edge are cut by it (or are the paper's edge, a rule's end).
BORDER_PIXELS = 3
# A character is at most this many times as wide as the line is high: a flatter group is the remnant of a rule.
MAX_CHARACTER_ASPECT = 2.5
# A group shorter than this is too small to read (a number 8 px high holds no readable digit at this size).
MIN_LINE_HEIGHT_PIXELS = 10
# Ruled lines: straight, at least this share of the image across, at most this thick, tilted by up to
# atan(RULE_MAX_SLOPE) = 17 degrees (a camera held up to 10 degrees off, plus keystone), in RULE_SLOPE_STEPS
# slopes. A line's band is the rows near its peak holding RULE_BAND_SHARE of the peak's count.
RULE_MIN_LENGTH_FRACTION = 0.3
RULE_MAX_THICKNESS_PIXELS = 5
RULE_MAX_SLOPE = 0.3
RULE_SLOPE_STEPS = 61
RULE_NEIGHBOURHOOD_ROWS = 4
RULE_BAND_SHARE = 0.5
# Rules are looked for in the pixels above this share of the ink's threshold (see remove_rules).
RULE_THRESHOLD_SHARE = 0.5
# A rule pixel with ink this close both above and below its band is where a stroke crosses the rule: kept.
RULE_CROSSING_PIXELS = 2
# Grouping: two components are in one line when they overlap vertically by this share of the shorter one and the
# horizontal gap is at most JOIN_GAP_HEIGHTS of the taller one (digits written apart leave under half a height);
# or when they overlap horizontally by this share of the narrower one with a vertical gap of at most
# STACK_GAP_HEIGHTS (a 5's detached bar above its body).
JOIN_OVERLAP_SHARE = 0.3
JOIN_GAP_HEIGHTS = 0.5
STACK_GAP_HEIGHTS = 0.3
# A group is cut out with its ink's anti-aliased edge: this many pixels around its components.
HALO_PIXELS = 2
# Components this share of the line's tallest or more are characters; smaller ones are dots, accents, fragments.
GLYPH_MIN_HEIGHT_SHARE = 0.5
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

    def mask_of(self, labels: _Ints, box: tuple[int, int, int, int]) -> _Mask:
        """The pixels of the components ``labels`` within ``box`` ``(x0, y0, x1, y1)``, as a mask of the box."""
        x0, y0, x1, y1 = box
        mask = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        chosen = np.isin(self.run_labels, labels) & (self.run_rows >= y0) & (self.run_rows < y1)
        starts = np.clip(self.run_starts[chosen], x0, x1) - x0
        ends = np.clip(self.run_ends[chosen], x0, x1) - x0
        for row, start, end in zip(self.run_rows[chosen] - y0, starts, ends, strict=True):
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


def _cell_percentiles(grey: npt.NDArray[np.uint8], percentiles: tuple[float, ...]) -> list[npt.NDArray[np.float32]]:
    """Percentiles of each cell of a coarse grid over ``grey`` (one partition for all), each bilinearly
    interpolated to every pixel."""
    height, width = grey.shape
    cells_y, cells_x = max(1, round(height / BACKGROUND_CELL_PIXELS)), max(1, round(width / BACKGROUND_CELL_PIXELS))
    cropped = grey[: height - height % cells_y, : width - width % cells_x]
    blocks = cropped.reshape(cells_y, cropped.shape[0] // cells_y, cells_x, cropped.shape[1] // cells_x)
    levels = np.percentile(blocks.transpose(0, 2, 1, 3).reshape(cells_y, cells_x, -1), percentiles, axis=2)
    return [
        np.asarray(
            Image.fromarray(level.astype(np.float32), mode="F").resize((width, height), Image.Resampling.BILINEAR),
            dtype=np.float32,
        )
        for level in levels
    ]


def _noise_sigma(residual: npt.NDArray[np.float32]) -> float:
    """The paper's noise from the residual's median absolute value over every other pixel of every other row (ink
    is too sparse to move it), at least half a grey level."""
    return float(np.median(np.abs(residual[::2, ::2]))) / 0.6745 + 0.5


def to_light_ink(grey: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    """``grey`` with light ink on dark paper, and the paper's level under it (the ``BACKGROUND_PERCENTILE`` of each
    cell in that polarity): inverted when more pixels stand out darker than the local paper than lighter. Unlike
    one digit's border test, this holds when a shadow or a dark table covers the border."""
    low, median, high = _cell_percentiles(grey, (BACKGROUND_PERCENTILE, 50.0, 100.0 - BACKGROUND_PERCENTILE))
    residual = grey.astype(np.float32) - median
    sigma = _noise_sigma(residual)
    darker = int(np.count_nonzero(residual < -INK_NOISE_SIGMAS * sigma))
    lighter = int(np.count_nonzero(residual > INK_NOISE_SIGMAS * sigma))
    if darker > lighter:
        return np.subtract(255, grey, dtype=np.uint8), np.float32(255.0) - high
    return grey, low


def _otsu(values: npt.NDArray[np.float32]) -> float:
    histogram, bin_edges = np.histogram(values, bins=64)
    weights = np.cumsum(histogram).astype(np.float64)
    centres = (bin_edges[:-1] + bin_edges[1:]) / 2
    sums = np.cumsum(histogram * centres)
    total, grand = weights[-1], sums[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (grand * weights - total * sums) ** 2 / (weights * (total - weights))
    return float(bin_edges[int(np.nanargmax(between[:-1])) + 1])


def ink_signal(
    light: npt.NDArray[np.uint8], paper: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.float32], float, float]:
    """Ink above the paper (grey levels, 0 on the paper), the threshold that separates ink, and the ink's
    typical level; the threshold is infinite when nothing stands out (a blank page)."""
    residual = light.astype(np.float32) - paper
    sigma = _noise_sigma(residual)
    signal = np.maximum(residual, 0.0)
    candidates = signal[signal > INK_NOISE_SIGMAS * sigma]
    if candidates.size == 0 or float(candidates.max()) < MIN_INK_CONTRAST_LEVELS:
        return signal, float("inf"), 0.0
    threshold = max(INK_NOISE_SIGMAS * sigma, min(_otsu(candidates), MIN_INK_CONTRAST_LEVELS))
    strong = signal[signal > threshold]
    return signal, threshold, float(np.percentile(strong, 90)) if strong.size else threshold


def remove_rules(mask: _Mask, faint: _Mask | None = None) -> _Mask:
    """``mask`` without its ruled lines: the near-horizontal ones, then the near-vertical ones (a margin). Rules
    are found in ``faint`` (ink at a lower threshold, ``mask`` itself by default) and erased from ``mask``: a pale
    printed rule stands out of the paper only here and there at the ink's threshold, too little of it to be found
    as a line, and its pieces would be read as 1s."""
    found_in = mask if faint is None else faint
    across, found_across = _remove_horizontal_rules(mask, found_in)
    return _remove_horizontal_rules(np.ascontiguousarray(across.T), np.ascontiguousarray(found_across.T))[0].T


def _remove_horizontal_rules(mask: _Mask, found_in: _Mask) -> tuple[_Mask, _Mask]:
    """``mask`` and ``found_in`` without the near-horizontal straight lines of ``found_in``, found as peaks of its
    ink counted along every slope up to ``RULE_MAX_SLOPE`` (a Hough transform restricted to rows): a line at least
    ``RULE_MIN_LENGTH_FRACTION`` of the width long and at most ``RULE_MAX_THICKNESS_PIXELS`` thick. Each line's
    rows are erased except where a stroke crosses them (:func:`_crossed`), so a digit written across it stays
    whole."""
    height, width = found_in.shape
    ys, xs = np.nonzero(found_in)
    min_count = RULE_MIN_LENGTH_FRACTION * width
    if xs.size < min_count:
        return mask, found_in
    slopes = np.linspace(-RULE_MAX_SLOPE, RULE_MAX_SLOPE, RULE_SLOPE_STEPS)
    margin = int(np.ceil(RULE_MAX_SLOPE * width / 2)) + 1
    span = height + 2 * margin
    centred = (xs - width / 2).astype(np.float32)

    def rows_along(slope_index: int) -> _Ints:
        """Each ink pixel's row along one slope, measured where the line crosses the image's middle column."""
        rows: _Ints = np.rint(ys - slopes[slope_index] * centred).astype(np.int64) + margin
        return rows

    counts = np.stack([np.bincount(rows_along(index), minlength=span) for index in range(len(slopes))])
    erase = np.zeros(xs.size, dtype=bool)
    taken = np.zeros(span, dtype=bool)
    peaks = np.flatnonzero(counts >= min_count)
    for flat in peaks[np.argsort(counts.ravel()[peaks], kind="stable")[::-1]]:
        slope_index, row = divmod(int(flat), span)
        peak = counts[slope_index, row]
        if taken[row]:
            continue
        profile = counts[slope_index, max(row - RULE_NEIGHBOURHOOD_ROWS, 0) : row + RULE_NEIGHBOURHOOD_ROWS + 1]
        band = np.flatnonzero(profile >= RULE_BAND_SHARE * peak) + max(row - RULE_NEIGHBOURHOOD_ROWS, 0)
        taken[max(row - RULE_NEIGHBOURHOOD_ROWS, 0) : row + RULE_NEIGHBOURHOOD_ROWS + 1] = True
        if band[-1] - band[0] + 1 > RULE_MAX_THICKNESS_PIXELS:
            continue  # a thick band: a line of text or a dark edge, not a rule
        rows = rows_along(slope_index)
        on_rule = np.flatnonzero((rows >= band[0]) & (rows <= band[-1]))
        crossed = _crossed(mask, ys[on_rule], xs[on_rule], rows[on_rule] - band[0], band[-1] - rows[on_rule])
        erase[on_rule[~crossed]] = True
    if not erase.any():
        return mask, found_in
    rule_pixels = np.zeros_like(found_in)
    rule_pixels[ys[erase], xs[erase]] = True
    return mask & ~rule_pixels, found_in & ~rule_pixels


def _crossed(mask: _Mask, ys: _Ints, xs: _Ints, below_top: _Ints, above_bottom: _Ints) -> _Mask:
    """Per rule pixel ``(ys, xs)``, lying ``below_top`` rows under its band's top edge and ``above_bottom`` over
    its bottom edge: whether ``mask`` has ink within ``RULE_CROSSING_PIXELS`` both above and below the band in
    that column, that is a stroke crosses the rule there. Those pixels are the stroke's: erasing them would cut
    the digit in two, and each piece would look like no digit at all."""
    height = mask.shape[0]
    above = np.zeros(ys.shape, dtype=bool)
    below = np.zeros(ys.shape, dtype=bool)
    for step in range(1, RULE_CROSSING_PIXELS + 1):
        up = ys - below_top - step
        down = ys + above_bottom + step
        above |= (up >= 0) & mask[np.clip(up, 0, height - 1), xs]
        below |= (down < height) & mask[np.clip(down, 0, height - 1), xs]
    return above & below


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


def _group_lines(boxes: _Ints) -> list[_Ints]:
    """:func:`_group` repeated on the groups' boxes until nothing more joins: the pieces of a digit cut by a ruled
    line join their digit first, and the digit its neighbours then, at the whole digit's height."""
    groups = [np.array([i]) for i in range(len(boxes))]
    while True:
        merged_boxes = np.array(
            [[boxes[g, 0].min(), boxes[g, 1].min(), boxes[g, 2].max(), boxes[g, 3].max()] for g in groups],
            dtype=np.int64,
        ).reshape(-1, 4)
        joined = _group(merged_boxes)
        if len(joined) == len(groups):
            return [
                np.array(sorted(np.concatenate([groups[i] for i in members]), key=lambda i: boxes[i, 0]))
                for members in joined
            ]
        groups = [np.concatenate([groups[i] for i in members]) for members in joined]


@dataclass(frozen=True)
class Candidate:
    """One line of ink that may be a number: its box ``(x0, y0, x1, y1)`` and its reader's strip, both in the
    uploaded image's pixels (after EXIF orientation)."""

    box: tuple[float, float, float, float]
    line: NormalisedLine
    # Its characters (components at least GLYPH_MIN_HEIGHT_SHARE of the line's height) canonicalised as one
    # uploaded digit is, ``(k, 28, 28)``: for the digit check, which tells digits from letters.
    glyphs: InkArray


def find_candidates(grey: npt.NDArray[np.uint8]) -> list[Candidate]:
    """Every line of handwriting-like ink in ``grey`` (dark ink on light paper or the reverse), in reading order,
    in ``grey``'s pixels."""
    signal, threshold, ink_level = ink_signal(*to_light_ink(grey))
    if not np.isfinite(threshold):
        return []
    components = label_components(remove_rules(signal > threshold, signal > threshold * RULE_THRESHOLD_SHARE))
    boxes, areas = components.boxes, components.areas
    heights = boxes[:, 3] - boxes[:, 1]
    inside = (
        (boxes[:, 0] >= BORDER_PIXELS)
        & (boxes[:, 1] >= BORDER_PIXELS)
        & (boxes[:, 2] <= grey.shape[1] - BORDER_PIXELS)
        & (boxes[:, 3] <= grey.shape[0] - BORDER_PIXELS)
    )
    kept = np.flatnonzero(
        (areas >= MIN_COMPONENT_PIXELS)
        & (heights >= MIN_COMPONENT_HEIGHT_PIXELS)
        & (heights <= MAX_TEXT_HEIGHT_FRACTION * grey.shape[0])
        & inside
    )
    floor = threshold / 2
    ramp = np.clip((signal - floor) / max(ink_level - floor, 1.0), 0.0, 1.0)
    candidates = []
    for members in _group_lines(boxes[kept]):
        labels = kept[members]
        x0, y0 = int(boxes[labels, 0].min()), int(boxes[labels, 1].min())
        x1, y1 = int(boxes[labels, 2].max()), int(boxes[labels, 3].max())
        if y1 - y0 < MIN_LINE_HEIGHT_PIXELS or x1 - x0 > MAX_CHARACTER_ASPECT * (y1 - y0) * len(labels):
            continue
        candidate = _cut_out(components, labels, ramp, (x0, y0, x1, y1))
        if candidate is not None:
            candidates.append(candidate)
    return in_reading_order(candidates, key=lambda candidate: candidate.box)


def _cut_out(components: Components, labels: _Ints, ramp: InkArray, box: tuple[int, int, int, int]) -> Candidate | None:
    height, width = ramp.shape
    x0, y0 = max(box[0] - HALO_PIXELS, 0), max(box[1] - HALO_PIXELS, 0)
    x1, y1 = min(box[2] + HALO_PIXELS, width), min(box[3] + HALO_PIXELS, height)
    own = components.mask_of(labels, (x0, y0, x1, y1))
    halo = Image.fromarray(own.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(2 * HALO_PIXELS + 1))
    ink = ramp[y0:y1, x0:x1] * (np.asarray(halo) > 0)
    try:
        line = normalise_ink(np.ascontiguousarray(ink, dtype=np.float32))
    except EmptyLineError:
        return None
    offset = line.to_source.copy()
    offset[:, 2] += (x0, y0)
    return Candidate(
        box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
        line=NormalisedLine(line.pixels, offset),
        glyphs=_glyphs(components, labels, ink, (x0, y0)),
    )


def _glyphs(components: Components, labels: _Ints, ink: InkArray, origin: tuple[int, int]) -> InkArray:
    """The line's characters as MNIST-style 28x28 images: the ink of each character's components in its own box
    (other components' ink there left out), canonicalised by the one-digit path. A character is the components
    that overlap horizontally (:func:`_characters`); characters shorter than ``GLYPH_MIN_HEIGHT_SHARE`` of the
    tallest are dots and fragments, left out."""
    characters = _characters(components.boxes[labels])
    boxes = [components.boxes[labels[members]] for members in characters]
    heights = [int(b[:, 3].max() - b[:, 1].min()) for b in boxes]
    images = []
    for members, member_boxes, height in zip(characters, boxes, heights, strict=True):
        if height < GLYPH_MIN_HEIGHT_SHARE * max(heights):
            continue
        x0, y0 = int(member_boxes[:, 0].min()), int(member_boxes[:, 1].min())
        x1, y1 = int(member_boxes[:, 2].max()), int(member_boxes[:, 3].max())
        own = components.mask_of(labels[members], (x0, y0, x1, y1))
        piece = ink[y0 - origin[1] : y1 - origin[1], x0 - origin[0] : x1 - origin[0]] * own
        if (piece > 0).any():
            images.append(center_by_mass(fit_into_box(crop_to_content(np.ascontiguousarray(piece, dtype=np.float32)))))
    return np.stack(images) if images else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)


def _characters(boxes: _Ints) -> list[_Ints]:
    """``boxes`` (one line's components) grouped into characters, left to right: a component joins the character
    before it when their columns overlap by ``JOIN_OVERLAP_SHARE`` of the narrower, as the pieces of a digit cut
    by a ruled line or a 5's detached bar do."""
    characters: list[list[int]] = []
    right = 0
    for index in np.argsort(boxes[:, 0], kind="stable"):
        x0, x1 = int(boxes[index, 0]), int(boxes[index, 2])
        if characters:
            left = int(boxes[characters[-1], 0].min())
            narrower = min(x1 - x0, right - left)
            if min(x1, right) - x0 >= JOIN_OVERLAP_SHARE * narrower:
                characters[-1].append(int(index))
                right = max(right, x1)
                continue
        characters.append([int(index)])
        right = x1
    return [np.array(members, dtype=np.int64) for members in characters]


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
            glyphs=c.glyphs,
        )
        for c in find_candidates(shrunk)
    ]
    size = (round(shrunk.shape[1] * scale), round(shrunk.shape[0] * scale))
    png = grey_png(np.clip(ink_signal(*to_light_ink(shrunk))[0] / 255.0, 0.0, 1.0)) if with_png else None
    return PreparedPage(candidates=candidates, size=size, png=png)
