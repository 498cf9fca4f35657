"""One batch of normalised lines through the line reader: pad, forward, calibrate, decode, and place each digit.

:class:`LineBatchReader` is the batch function of ``/read``'s micro-batcher. Lines of different widths share one
forward pass, zero-padded on the right to the widest (the reader was trained on such batches); each line's
frames are then cut back to its own width, divided by the manifest's temperature and decoded greedily
(:func:`contract.ctc.greedy_decode`); the whole string's confidence is its best path's probability through the
manifest's ``string_calibration``. A digit's columns run from midway between its peak frame and its left
neighbour's to midway to its right neighbour's; its box is the ink there, mapped back to the uploaded image.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from contract import CHECK_CLASSES
from contract.ctc import DecodedLine
from contract.ctc import greedy_decode as decode_line
from imaging.digit import grey_png
from imaging.lines import InkArray, NormalisedLine, digit_image, ink_box
from service.registry import ModelSet
from service.telemetry import Telemetry


@dataclass(frozen=True)
class LineRequest:
    """One request's work: its normalised line, the snapshot it started with and the reader it uses."""

    line: NormalisedLine
    models: ModelSet
    reader: str
    with_digit_pngs: bool = False
    # The line's characters as MNIST-style 28x28 images (``/detect``'s connected components): when given and a
    # digit check is served, the reading says how much they look like handwritten digits rather than letters.
    glyphs: InkArray | None = None


@dataclass(frozen=True)
class ReadDigit:
    """One digit of the answer; ``box`` is ``(x0, y0, x1, y1)`` in the uploaded image's pixels."""

    label: int
    confidence: float
    probabilities: list[float]
    box: tuple[float, float, float, float]
    png: bytes | None = None


@dataclass(frozen=True)
class LineReading:
    """The string read, its calibrated probability, its best path's probability (``/detect``'s rule thresholds
    it), its digits, the reader's version and the batch's size."""

    text: str
    confidence: float
    path_probability: float
    digits: list[ReadDigit]
    reader: str
    version: int
    batch_size: int
    # The geometric mean over the request's glyphs of the digit check's probability that a glyph is not "not a
    # digit" (one digit or several); None when no glyphs were given or no check is served.
    digit_likeness: float | None = None


def digit_columns(decoded: DecodedLine, width: int, frame_pixels: int) -> list[tuple[int, int]]:
    """Each read digit's strip columns: split midway between neighbouring peaks, the ends at the strip's edges."""
    peaks = [(digit.peak_frame + 0.5) * frame_pixels for digit in decoded.digits]
    if not peaks:
        return []
    cuts = [0, *(round((left + right) / 2) for left, right in zip(peaks, peaks[1:], strict=False)), width]
    return list(zip(cuts, cuts[1:], strict=False))


def _place_digits(decoded: DecodedLine, line: NormalisedLine, frame_pixels: int, with_pngs: bool) -> list[ReadDigit]:
    digits = []
    columns = digit_columns(decoded, line.pixels.shape[1], frame_pixels)
    for digit, (first, end) in zip(decoded.digits, columns, strict=True):
        digits.append(
            ReadDigit(
                label=digit.label,
                confidence=digit.confidence,
                probabilities=digit.probabilities,
                box=line.source_box(*ink_box(line.pixels, first, end)),
                png=grey_png(digit_image(line.pixels, first, end)) if with_pngs else None,
            )
        )
    return digits


class LineBatchReader:
    """Callable batch function: ``list[LineRequest]`` to ``list[LineReading]`` in the same order."""

    def __init__(self, device: torch.device, telemetry: Telemetry | None = None) -> None:
        self.device = device
        self._telemetry = telemetry

    def __call__(self, requests: Sequence[LineRequest]) -> list[LineReading]:
        if self._telemetry is not None:
            self._telemetry.batch_size.observe(len(requests))
        results: dict[int, LineReading] = {}
        groups: dict[tuple[int, str], list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault((id(request.models), request.reader), []).append(index)
        with torch.inference_mode():
            for indices in groups.values():
                group = [requests[i] for i in indices]
                for index, reading in zip(indices, self._read_group(group, len(requests)), strict=True):
                    results[index] = reading
        return [results[index] for index in range(len(requests))]

    def _read_group(self, group: Sequence[LineRequest], batch_size: int) -> list[LineReading]:
        loaded = group[0].models[group[0].reader]
        widths = [request.line.pixels.shape[1] for request in group]
        batch = np.zeros((len(group), 1, group[0].line.pixels.shape[0], max(widths)), dtype=np.float32)
        for row, request in enumerate(group):
            batch[row, 0, :, : widths[row]] = request.line.pixels
        started = time.perf_counter()
        logits = loaded(torch.from_numpy(batch).to(self.device)).float().cpu()  # (N, W / frame_pixels, 11)
        if self._telemetry is not None:
            self._telemetry.inference_seconds.labels(loaded.name).observe(time.perf_counter() - started)
        log_probs = F.log_softmax(logits / loaded.manifest.temperature, dim=2)
        frame_pixels = loaded.manifest.frame_pixels
        likeness = self._digit_likeness(group)
        readings = []
        for row, request in enumerate(group):
            decoded = decode_line(log_probs[row, : widths[row] // frame_pixels])
            readings.append(
                LineReading(
                    text=decoded.text,
                    confidence=decoded.confidence(loaded.manifest.string_calibration),
                    path_probability=decoded.path_probability,
                    digits=_place_digits(decoded, request.line, frame_pixels, request.with_digit_pngs),
                    reader=loaded.name,
                    version=loaded.version,
                    batch_size=batch_size,
                    digit_likeness=likeness[row],
                )
            )
        return readings

    def _digit_likeness(self, group: Sequence[LineRequest]) -> list[float | None]:
        """Per request, the geometric mean of its glyphs' probabilities of being a digit (or digits) by the digit
        check, all of the group's glyphs in one forward pass. Geometric: one clear letter among digits counts
        (on validation pages it kept fewer printed words than the arithmetic mean, at the same recall)."""
        check = group[0].models.check
        counts = [0 if request.glyphs is None else len(request.glyphs) for request in group]
        if check is None or not any(counts):
            return [None] * len(group)
        glyphs = np.concatenate([request.glyphs for request in group if request.glyphs is not None])
        batch = torch.from_numpy(np.ascontiguousarray(glyphs[:, np.newaxis], dtype=np.float32)).to(self.device)
        probabilities = F.softmax(check(batch).float().cpu() / check.manifest.temperature, dim=1)
        # Floored so that one glyph the check is sure about does not zero the whole line.
        log_digit = np.log(np.maximum(1.0 - probabilities[:, CHECK_CLASSES.index("not a digit")].numpy(), 1e-6))
        ends = np.cumsum(counts).tolist()
        return [
            float(np.exp(log_digit[end - count : end].mean())) if count else None
            for count, end in zip(counts, ends, strict=True)
        ]
