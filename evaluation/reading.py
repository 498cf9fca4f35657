"""Reading whole numbers: the line reader against Tesseract 5 and EasyOCR on one seeded set of rendered lines.

``python -m evaluation.reading`` composes test lines from MNIST **test** digits (rendered as scans, phone photos
and canvas drawings) and from USPS test digits (rendered as scans), reads every upload through the service's own
path (:func:`imaging.lines.prepare_line`, the registry's loader and the ``/read`` batch function), scores the two
anchors on the very same files, and writes a JSON of exact match (whole number right) and digit accuracy
(1 - character error rate) by rendering, length and spacing, with the commonest confusions.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import numpy as np
import torch
from PIL import Image

from contract import ModelStore
from evaluation.line_images import RENDERERS, RENDERINGS, Rendering
from evaluation.run import DEFAULT_USPS, load_usps
from imaging.decoding import DecodeLimits
from imaging.lines import prepare_line
from service.reading import LineBatchReader, LineRequest
from service.registry import ModelSet, load_model
from training.data import default_data_dir, load_mnist
from training.reading import edit_distance, expected_calibration_error
from training.synthetic_lines import MAX_DIGITS, LineVariation, Spacing, compose_line, crop_glyph

logger = logging.getLogger(__name__)

Source = Literal["mnist", "usps"]
LineSpacing = Literal["apart", "touching"]
DEFAULT_OUT = Path("reports/reading/reading.json")
DEFAULT_ANCHOR_CACHE = Path("reports/reading/anchor_readings.json")
# USPS digits fill their 16-px frame; MNIST's ink is about 20 px high. Scaled up so both compose alike.
_USPS_TO_MNIST_SCALE = 20 / 16
# Lines read per forward pass, as the service batches them under load.
_READ_BATCH_LINES = 64
_LIMITS = DecodeLimits(max_image_pixels=25_000_000)
_LENGTH_BUCKETS = ((1, 3), (4, 6), (7, 9), (10, 12))
_TOP_CONFUSIONS = 12
# The anchor cache is saved after every chunk, so an interrupted run loses little.
_CACHE_CHUNK_LINES = 50


@dataclass(frozen=True)
class RenderedLine:
    """One upload of the test set and what it says."""

    text: str
    source: Source
    rendering: Rendering
    spacing: LineSpacing
    data: bytes

    @property
    def group(self) -> str:
        return "usps_scan" if self.source == "usps" else self.rendering

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _touching_gaps(count: int, rng: np.random.Generator) -> list[Spacing]:
    return ["touching" if rng.uniform() < 0.6 else "overlapping" for _ in range(count)]


def compose_test_lines(
    glyphs: Sequence[np.ndarray],
    labels: Sequence[int],
    renderings: Sequence[Rendering],
    count: int,
    source: Source,
    rng: np.random.Generator,
) -> list[RenderedLine]:
    """``count`` lines, lengths cycling 1..12, alternately apart and touching, renderings cycling too."""
    variation = LineVariation()
    lines = []
    for index in range(count):
        length = 1 + index % MAX_DIGITS
        spacing: LineSpacing = "apart" if (index // MAX_DIGITS) % 2 == 0 else "touching"
        rendering = renderings[index % len(renderings)]
        chosen = rng.integers(0, len(glyphs), length)
        gaps: list[Spacing] = ["apart"] * (length - 1) if spacing == "apart" else _touching_gaps(length - 1, rng)
        ink = compose_line([glyphs[i] for i in chosen], gaps, rng, variation)
        text = "".join(str(int(labels[i])) for i in chosen)
        lines.append(RenderedLine(text, source, rendering, spacing, RENDERERS[rendering](ink, rng)))
    return lines


def usps_glyphs(path: Path) -> tuple[list[np.ndarray], list[int]]:
    """USPS test digits cropped to their ink and scaled to MNIST's digit height."""
    images, labels = load_usps(path)
    glyphs = []
    for image in images.numpy():
        glyph = crop_glyph(image)
        size = (round(glyph.shape[1] * _USPS_TO_MNIST_SCALE), round(glyph.shape[0] * _USPS_TO_MNIST_SCALE))
        scaled = Image.fromarray(glyph, mode="F").resize(size, Image.Resampling.BILINEAR)
        glyphs.append(np.clip(np.asarray(scaled, dtype=np.float32), 0.0, 1.0))
    return glyphs, [int(label) for label in labels]


def build_test_set(data_dir: Path, usps_path: Path, mnist_lines: int, usps_lines: int, seed: int) -> list[RenderedLine]:
    """The seeded test set: MNIST test digits across the three renderings, then USPS digits as scans."""
    rng = np.random.default_rng(seed)
    images, labels = load_mnist(data_dir, "test")
    glyphs = [crop_glyph(image) for image in images.numpy()]
    lines = compose_test_lines(glyphs, labels.tolist(), RENDERINGS, mnist_lines, "mnist", rng)
    usps, usps_labels = usps_glyphs(usps_path)
    return lines + compose_test_lines(usps, usps_labels, ("scan",), usps_lines, "usps", rng)


# -- readers -------------------------------------------------------------------------------------------------


def read_with_service(lines: Sequence[RenderedLine], store: ModelStore, reader: str) -> list[tuple[str, float]]:
    """What ``/read`` answers, text and whole-string confidence: the service's line preparation, the store's
    reader, the route's batch function. A line the service refuses as empty reads as the empty string, with
    confidence 0."""
    device = torch.device("cpu")
    loaded = load_model(store, reader, store.resolve(reader), device)
    models = ModelSet({reader: loaded})
    batch_reader = LineBatchReader(device)
    answers: list[tuple[str, float]] = []
    for start in range(0, len(lines), _READ_BATCH_LINES):
        requests = []
        empty = set()
        for offset, line in enumerate(lines[start : start + _READ_BATCH_LINES]):
            try:
                prepared = prepare_line(line.data, _LIMITS)
            except Exception:
                empty.add(offset)
                continue
            requests.append(LineRequest(line=prepared.line, models=models, reader=reader))
        readings = iter(batch_reader(requests)) if requests else iter(())
        chunk = lines[start : start + _READ_BATCH_LINES]
        for offset in range(len(chunk)):
            reading = None if offset in empty else next(readings)
            answers.append(("", 0.0) if reading is None else (reading.text, reading.confidence))
    return answers


def confidence_calibration(lines: Sequence[RenderedLine], answers: Sequence[tuple[str, float]]) -> dict[str, float]:
    """How well the whole-string confidence predicts an exact reading: the expected calibration error over ten
    equal-width bins, the mean confidence and the exact-match rate it should equal."""
    confidence = [value for _text, value in answers]
    right = [text == line.text for line, (text, _value) in zip(lines, answers, strict=True)]
    return {
        "ece": expected_calibration_error(confidence, right),
        "mean_confidence": float(np.mean(confidence)),
        "exact_match": float(np.mean(right)),
    }


def read_with_tesseract(lines: Sequence[RenderedLine]) -> list[str]:
    """Tesseract 5 as a user would call it on a number: one text line (``--psm 7``), digits only."""
    texts = []
    for line in lines:
        completed = subprocess.run(
            ["tesseract", "stdin", "stdout", "--psm", "7", "-c", "tessedit_char_whitelist=0123456789"],
            input=line.data,
            capture_output=True,
            check=False,
            env={**os.environ, "OMP_THREAD_LIMIT": "1"},
            timeout=60,
        )
        texts.append("".join(char for char in completed.stdout.decode(errors="replace") if char.isdigit()))
    return texts


@functools.cache
def _easyocr_reader() -> Any:
    import easyocr
    import easyocr_en_models

    return easyocr.Reader(
        ["en"], gpu=False, model_storage_directory=easyocr_en_models.model_dir(), download_enabled=False, verbose=False
    )


def read_with_easyocr(lines: Sequence[RenderedLine]) -> list[str]:
    """EasyOCR with its offline English weights (no download at run time), digits only, on the CPU."""
    reader = _easyocr_reader()
    texts = []
    for line in lines:
        results = reader.readtext(line.data, allowlist="0123456789", detail=0, paragraph=True)
        texts.append("".join(char for text in results for char in str(text) if char.isdigit()))
    return texts


class HasSha256(Protocol):
    """An upload of a test set: anything the cache can key by its bytes' sha256 (a line, a page)."""

    @property
    def sha256(self) -> str: ...


Upload = TypeVar("Upload", bound=HasSha256)


class AnchorCache:
    """What each anchor read from each upload, keyed by the upload's sha256.

    The anchors are fixed programs, so their reading of a given file never changes: the cache lets the (slow)
    anchors run once while the reader is re-scored, and a changed test set simply misses and is read afresh.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.readings: dict[str, dict[str, str]] = {}
        if path is not None and path.is_file():
            self.readings = json.loads(path.read_text())

    def read(self, name: str, lines: Sequence[Upload], read: Callable[[Sequence[Upload]], list[str]]) -> list[str]:
        known = self.readings.setdefault(name, {})
        missing = [line for line in lines if line.sha256 not in known]
        logger.info("%s: reading %d of %d lines (the rest are cached)", name, len(missing), len(lines))
        for start in range(0, len(missing), _CACHE_CHUNK_LINES):
            chunk = missing[start : start + _CACHE_CHUNK_LINES]
            known.update(zip((line.sha256 for line in chunk), read(chunk), strict=True))
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.write_text(json.dumps(self.readings, indent=1, sort_keys=True) + "\n")
        return [known[line.sha256] for line in lines]


# -- scoring -------------------------------------------------------------------------------------------------


def _alignment(truth: str, predicted: str) -> list[tuple[str, str]]:
    """Edit operations turning ``truth`` into ``predicted``: (t, p) substitutions, (t, "") deletions, ("", p)
    insertions; matches are left out."""
    rows, cols = len(truth) + 1, len(predicted) + 1
    cost = np.zeros((rows, cols), dtype=np.int32)
    cost[:, 0], cost[0, :] = np.arange(rows), np.arange(cols)
    for i in range(1, rows):
        for j in range(1, cols):
            cost[i, j] = min(
                cost[i - 1, j] + 1, cost[i, j - 1] + 1, cost[i - 1, j - 1] + (truth[i - 1] != predicted[j - 1])
            )
    operations = []
    i, j = len(truth), len(predicted)
    while i > 0 or j > 0:
        if i > 0 and j > 0 and cost[i, j] == cost[i - 1, j - 1] + (truth[i - 1] != predicted[j - 1]):
            if truth[i - 1] != predicted[j - 1]:
                operations.append((truth[i - 1], predicted[j - 1]))
            i, j = i - 1, j - 1
        elif i > 0 and cost[i, j] == cost[i - 1, j] + 1:
            operations.append((truth[i - 1], ""))
            i -= 1
        else:
            operations.append(("", predicted[j - 1]))
            j -= 1
    return operations


def score(truth: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    """Lines, exact match and digit accuracy (1 - CER, floored at 0 per set, not per line)."""
    errors = sum(edit_distance(t, p) for t, p in zip(truth, predicted, strict=True))
    digits = sum(len(t) for t in truth)
    return {
        "lines": len(truth),
        "exact_match": sum(t == p for t, p in zip(truth, predicted, strict=True)) / max(len(truth), 1),
        "digit_accuracy": max(0.0, 1.0 - errors / max(digits, 1)),
    }


def _confusions(truth: Sequence[str], predicted: Sequence[str]) -> list[dict[str, Any]]:
    counts: Counter[tuple[str, str]] = Counter()
    for t, p in zip(truth, predicted, strict=True):
        counts.update(_alignment(t, p))
    return [
        {"truth": t or "(none)", "read": p or "(none)", "count": n} for (t, p), n in counts.most_common(_TOP_CONFUSIONS)
    ]


def breakdown(lines: Sequence[RenderedLine], predicted: Sequence[str]) -> dict[str, Any]:
    """Scores overall, by rendering, by length bucket and by spacing, plus the commonest confusions."""
    truth = [line.text for line in lines]

    def subset(keep: Callable[[RenderedLine], bool]) -> dict[str, float]:
        chosen = [i for i, line in enumerate(lines) if keep(line)]
        return score([truth[i] for i in chosen], [predicted[i] for i in chosen])

    groups = dict.fromkeys(line.group for line in lines)
    return {
        "overall": score(truth, predicted),
        "mnist": subset(lambda line: line.source == "mnist"),
        "by_rendering": {group: subset(lambda line, g=group: line.group == g) for group in groups},  # type: ignore[misc]
        "by_length": {
            f"{low}-{high}": subset(lambda line, lo=low, hi=high: lo <= len(line.text) <= hi)  # type: ignore[misc]
            for low, high in _LENGTH_BUCKETS
        },
        "by_spacing": {
            spacing: subset(lambda line, s=spacing: line.spacing == s)  # type: ignore[misc]
            for spacing in ("apart", "touching")
        },
        "mnist_by_spacing": {
            spacing: subset(lambda line, s=spacing: line.source == "mnist" and line.spacing == s)  # type: ignore[misc]
            for spacing in ("apart", "touching")
        },
        "confusions": _confusions(truth, predicted),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build the test set, read it with every reader, and return the results."""
    started = time.perf_counter()
    lines = build_test_set(args.data_dir, args.usps, args.mnist_lines, args.usps_lines, args.seed)
    logger.info("test set: %d lines (%d MNIST, %d USPS)", len(lines), args.mnist_lines, args.usps_lines)
    store = ModelStore(args.store)
    version = None if args.anchors_only else store.resolve(args.reader)
    cache = AnchorCache(args.anchor_cache)
    # EasyOCR takes seconds of CPU per line here, so it reads a seeded random share of the set (all renderings,
    # lengths and spacings alike); every reader is also scored on that same subset.
    chosen_rows = np.sort(
        np.random.default_rng(args.seed).choice(len(lines), round(len(lines) * args.easyocr_share), replace=False)
    ).tolist()
    subset = [lines[row] for row in chosen_rows]
    readers: dict[str, tuple[Sequence[RenderedLine], Callable[[Sequence[RenderedLine]], list[str]]]] = {}
    # The service's answers also carry each line's confidence, kept for its calibration below.
    answers: list[tuple[str, float]] = []

    def read_service(batch: Sequence[RenderedLine]) -> list[str]:
        answers[:] = read_with_service(batch, store, args.reader)
        return [text for text, _confidence in answers]

    if not args.anchors_only:
        readers[f"{args.reader} v{version}"] = (lines, read_service)
    if not args.skip_anchors:
        readers["tesseract"] = (lines, lambda batch: cache.read("tesseract", batch, read_with_tesseract))
        readers["easyocr"] = (subset, lambda batch: cache.read("easyocr", batch, read_with_easyocr))
    results: dict[str, Any] = {}
    for name, (chosen, read) in readers.items():
        began = time.perf_counter()
        predicted = read(chosen)
        seconds = time.perf_counter() - began
        on_subset = [predicted[row] for row in chosen_rows] if chosen is lines else predicted
        results[name] = {"easyocr_subset": breakdown(subset, on_subset)}
        if chosen is lines:
            results[name]["all"] = breakdown(lines, predicted)
        if name.startswith(args.reader):
            results[name]["ms_per_line"] = 1e3 * seconds / len(lines)
        overall = results[name]["easyocr_subset"]["overall"]
        logger.info(
            "%s on the EasyOCR subset: exact %.2f %%, digits %.2f %% (%.0f s)",
            name, 100 * overall["exact_match"], 100 * overall["digit_accuracy"], seconds,
        )  # fmt: skip
    return {
        "test_set": {
            "seed": args.seed,
            "mnist_lines": args.mnist_lines,
            "usps_lines": args.usps_lines,
            "renderings": list(RENDERINGS),
            "lengths": f"1-{MAX_DIGITS}",
            "easyocr_share": args.easyocr_share,
            "easyocr_subset_lines": len(subset),
        },
        "environment": {
            "torch_threads": 1,
            "tesseract": _tesseract_version(),
            "easyocr": None if args.skip_anchors else _easyocr_version(),
        },
        "readers": results,
        # The service reader's whole-string confidence on the whole set.
        "confidence_calibration": confidence_calibration(lines, answers) if answers else None,
        "wall_seconds": time.perf_counter() - started,
    }


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


_ROW_TITLES = {"by_rendering": "rendering: {}", "mnist_by_spacing": "MNIST, digits {}", "by_length": "length {}"}


def _score_rows(readers: dict[str, Any], names: list[str], subset: str, breakdowns: tuple[str, ...]) -> list[str]:
    """One table row for the whole ``subset``, then one per group of each breakdown: each reader's exact match /
    digit accuracy, and the group's line count (the first reader's)."""
    first = readers[names[0]][subset]
    paths: list[tuple[str, tuple[str, ...]]] = [("all", ("overall",))]
    paths += [(_ROW_TITLES[kind].format(group), (kind, group)) for kind in breakdowns for group in first[kind]]
    rows = []
    for title, path in paths:
        entries = [_lookup(readers[name][subset], path) for name in names]
        cells = [f"{_pct(entry['exact_match'])} / {_pct(entry['digit_accuracy'])}" for entry in entries]
        rows.append(f"| {title} ({int(_lookup(first, path)['lines'])}) | " + " | ".join(cells) + " |")
    return rows


def _lookup(entry: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        entry = entry[key]
    return entry


def markdown(results: dict[str, Any]) -> str:
    """Tables of the JSON: the three readers on the EasyOCR subset by rendering, spacing and length, then the
    reader and Tesseract on the whole set, then the reader's commonest confusions."""
    readers = results["readers"]
    names = list(readers)
    lines = [
        f"Test set: {results['test_set']['mnist_lines']} lines of MNIST test digits (scan, photo, canvas) and "
        f"{results['test_set']['usps_lines']} of USPS test digits (scan), 1-12 digits, seed "
        f"{results['test_set']['seed']}. Exact match / digit accuracy (1 - CER).",
        "",
        f"On the {results['test_set']['easyocr_subset_lines']} lines EasyOCR read (a seeded random "
        f"{_pct(results['test_set']['easyocr_share'])} of the set):",
        "",
        "| lines | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    lines += _score_rows(readers, names, "easyocr_subset", ("by_rendering", "mnist_by_spacing", "by_length"))
    full = [name for name in names if "all" in readers[name]]
    lines += ["", "On the whole set:", "", "| lines | " + " | ".join(full) + " |", "|---|" + "---|" * len(full)]
    lines += _score_rows(readers, full, "all", ("by_rendering", "mnist_by_spacing"))
    whole = readers[full[0]]["all"]
    confusions = ", ".join(f"{c['truth']}→{c['read']} ×{c['count']}" for c in whole["confusions"])
    lines += ["", f"{names[0]}'s commonest errors (truth→read): {confusions}.", ""]
    calibration = results.get("confidence_calibration")
    if calibration:
        lines += [
            f"{names[0]}'s whole-string confidence on the whole set: mean {_pct(calibration['mean_confidence'])} "
            f"against {_pct(calibration['exact_match'])} of lines read exactly; expected calibration error "
            f"{calibration['ece']:.3f}.",
            "",
        ]
    return "\n".join(lines)


def _tesseract_version() -> str | None:
    if shutil.which("tesseract") is None:
        return None
    completed = subprocess.run(["tesseract", "--version"], capture_output=True, text=True, check=False, timeout=30)
    return (completed.stdout or completed.stderr).splitlines()[0]


def _easyocr_version() -> str:
    import easyocr

    return str(easyocr.__version__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.reading",
        description="Score the line reader, Tesseract and EasyOCR on seeded test lines; write JSON.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--store", type=Path, default=Path("model_store"))
    parser.add_argument("--reader", default="reader", help="the line reader's name in the store")
    parser.add_argument("--data-dir", type=Path, default=None, help="MNIST IDX files (default as for training)")
    parser.add_argument("--usps", type=Path, default=DEFAULT_USPS)
    parser.add_argument("--mnist-lines", type=int, default=1050, help="lines from MNIST test digits")
    parser.add_argument("--usps-lines", type=int, default=240, help="lines from USPS test digits")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--skip-anchors", action="store_true", help="score only the line reader")
    parser.add_argument("--anchors-only", action="store_true", help="score only Tesseract and EasyOCR")
    parser.add_argument("--easyocr-share", type=float, default=0.2, help="share of the lines EasyOCR reads")
    parser.add_argument(
        "--anchor-cache", type=Path, default=DEFAULT_ANCHOR_CACHE, help="the anchors' readings by file sha256"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.data_dir = args.data_dir or default_data_dir()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # One thread for every torch model (the reader and EasyOCR's), so timings compare like with like.
    torch.set_num_threads(1)
    results = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    if not args.anchors_only and not args.skip_anchors:
        args.out.with_suffix(".md").write_text(markdown(results))
    logger.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
