"""Finding and reading numbers on whole pages: ``/detect``'s path against EasyOCR's detector and reader.

``python -m evaluation.detection`` composes seeded synthetic pages (:mod:`evaluation.pages`): **validation**
pages from the MNIST training digits that neither the served reader nor the served check trained on
(:mod:`evaluation.holdout`), on which the two thresholds that tell numbers from clutter are chosen (the pair with
the best F1 of detection), and **test** pages from MNIST test digits, read once with them.
Every page goes through the service's own path (:func:`imaging.detection.prepare_page`, the store's reader, the
line batch function, :func:`service.api.detect.is_number`); EasyOCR (detector and reader, digits only) reads the
same test pages. A true number is *found* when a kept box overlaps its true box with IoU >= 0.5 (each box matches
at most once); *exact* when the found box also reads its digits exactly. Writes ``reports/detection.json`` and
``reports/detection.md``; ``--store`` and ``--reader`` re-score another reader version with the same command
(EasyOCR's readings are cached by page sha256 in ``reports/detection_easyocr.json``, so a re-run costs seconds).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contract import ModelStore
from evaluation.holdout import held_out_by_all
from evaluation.pages import Box, Page, compose_page
from evaluation.reading import AnchorCache, _easyocr_reader
from imaging.decoding import DecodeLimits
from imaging.detection import prepare_page
from service.api.detect import NumberRule
from service.reading import LineBatchReader, LineRequest
from service.registry import ModelSet, load_model
from training.data import Subset, default_data_dir, load_mnist
from training.synthetic_lines import crop_glyph

logger = logging.getLogger(__name__)

DEFAULT_OUT = Path("reports/detection.json")
DEFAULT_ANCHOR_CACHE = Path("reports/detection_easyocr.json")
MIN_IOU = 0.5
_LIMITS = DecodeLimits(max_image_pixels=25_000_000)
# Thresholds tried on the validation pages (each of the two rule's thresholds).
_THRESHOLDS = tuple(round(float(value), 2) for value in np.arange(0.0, 1.0, 0.05))


@dataclass(frozen=True)
class Found:
    """One box a reader kept (or proposed), what it read there and how sure it was (the service's reader: its best
    path probability, which the rule thresholds; EasyOCR: its own confidence)."""

    box: Box
    text: str
    confidence: float
    digit_likeness: float | None = None


def iou(a: Box, b: Box) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def build_pages(digits: Subset, count: int, seed: int) -> list[Page]:
    glyphs = [crop_glyph(image) for image in digits.images.numpy()]
    rng = np.random.default_rng(seed)
    return [compose_page(glyphs, digits.labels.tolist(), rng) for _ in range(count)]


def validation_digits(store: ModelStore, reader: str, check: str, data_dir: Path) -> Subset:
    """The MNIST training digits that neither the served reader nor the served check trained on."""
    pool = Subset(*load_mnist(data_dir, "train"))
    models = {reader: store.resolve(reader), check: store.resolve(check)}
    return pool.take(held_out_by_all(store, models, pool))


def read_with_service(
    pages: Sequence[Page], store: ModelStore, reader: str, check_name: str
) -> tuple[list[list[Found]], int]:
    """Every candidate of every page as ``/detect`` reads it (before its rule is applied), and the reader's
    version."""
    device = torch.device("cpu")
    loaded = load_model(store, reader, store.resolve(reader), device)
    check = load_model(store, check_name, store.resolve(check_name), device)
    models = ModelSet({reader: loaded, check_name: check})
    batch_reader = LineBatchReader(device)
    results = []
    for page in pages:
        candidates = prepare_page(page.data, _LIMITS).candidates
        readings = batch_reader(
            [LineRequest(line=c.line, models=models, reader=reader, glyphs=c.glyphs) for c in candidates]
        )
        found = [
            Found(c.box, r.text, r.path_probability, r.digit_likeness)
            for c, r in zip(candidates, readings, strict=True)
        ]
        results.append([f for f in found if f.text])
    return results, loaded.version


def read_with_easyocr(pages: Sequence[Page]) -> list[str]:
    """EasyOCR's text detector (CRAFT) and reader on each page, digits only: every box it returns with digits and
    the page's reading time, as one JSON object per page (the anchor cache's format)."""
    reader = _easyocr_reader()
    results = []
    for page in pages:
        began = time.perf_counter()
        found = []
        for points, text, confidence in reader.readtext(page.data, allowlist="0123456789"):
            xs, ys = [float(p[0]) for p in points], [float(p[1]) for p in points]
            digits = "".join(char for char in str(text) if char.isdigit())
            if digits:
                found.append(
                    {"box": [min(xs), min(ys), max(xs), max(ys)], "text": digits, "confidence": float(confidence)}
                )
        results.append(json.dumps({"found": found, "ms": 1e3 * (time.perf_counter() - began)}))
    return results


def _found_boxes(encoded: str) -> list[Found]:
    return [Found(tuple(f["box"]), f["text"], f["confidence"]) for f in json.loads(encoded)["found"]]


def score(pages: Sequence[Page], found: Sequence[Sequence[Found]], rule: NumberRule) -> dict[str, float]:
    """Detection precision and recall (IoU >= 0.5, greedy by IoU, one match per box) and end-to-end exact match
    (the share of true numbers found and read exactly) of the boxes ``rule`` keeps."""
    truths = kept_count = matched = exact = 0
    for page, boxes in zip(pages, found, strict=True):
        kept = [f for f in boxes if rule.accepts(f.text, f.confidence, f.digit_likeness)]
        truths += len(page.numbers)
        kept_count += len(kept)
        pairs = sorted(
            ((iou(n.box, f.box), i, j) for i, n in enumerate(page.numbers) for j, f in enumerate(kept)), reverse=True
        )
        used_truth: set[int] = set()
        used_found: set[int] = set()
        for overlap, i, j in pairs:
            if overlap < MIN_IOU or i in used_truth or j in used_found:
                continue
            used_truth.add(i)
            used_found.add(j)
            matched += 1
            exact += page.numbers[i].text == kept[j].text
    return {
        "numbers": truths,
        "kept": kept_count,
        "found": matched,
        "recall": matched / max(truths, 1),
        "precision": matched / max(kept_count, 1),
        "end_to_end_exact": exact / max(truths, 1),
    }


def choose_rule(pages: Sequence[Page], found: Sequence[Sequence[Found]]) -> tuple[NumberRule, list[dict[str, float]]]:
    """The pair of thresholds with the best F1 of detection on ``pages`` (the lowest of equals), and the grid."""
    grid = []
    for min_path_probability in _THRESHOLDS:
        for min_likeness in _THRESHOLDS:
            scores = score(pages, found, NumberRule(min_path_probability, min_likeness))
            grid.append({"min_path_probability": min_path_probability, "min_digit_likeness": min_likeness, **scores})
    best = max(grid, key=lambda row: (_f1(row), -row["min_path_probability"], -row["min_digit_likeness"]))
    return NumberRule(float(best["min_path_probability"]), float(best["min_digit_likeness"])), grid


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    store = ModelStore(args.store)
    held = validation_digits(store, args.reader, args.check, args.data_dir)
    validation = build_pages(held, args.validation_pages, args.seed)
    test_digits = Subset(*load_mnist(args.data_dir, "test"))
    test = [] if args.validation_only else build_pages(test_digits, args.test_pages, args.seed + 1)
    logger.info("%d validation pages, %d test pages", len(validation), len(test))
    found_validation, version = read_with_service(validation, store, args.reader, args.check)
    rule, grid = choose_rule(validation, found_validation)
    logger.info("rule chosen on validation pages: %s, %s", rule, score(validation, found_validation, rule))
    if args.validation_only:
        return {"rule": rule.__dict__, "validation": score(validation, found_validation, rule)}
    began = time.perf_counter()
    found_test, _ = read_with_service(test, store, args.reader, args.check)
    service_ms = 1e3 * (time.perf_counter() - began) / len(test)
    results: dict[str, Any] = {
        "pages": {
            "seed": args.seed,
            "validation_digits": len(held),
            "validation_pages": len(validation),
            "validation_numbers": sum(len(p.numbers) for p in validation),
            "test_pages": len(test),
            "test_numbers": sum(len(p.numbers) for p in test),
        },
        "rule": {"min_path_probability": rule.min_path_probability, "min_digit_likeness": rule.min_digit_likeness},
        "validation": score(validation, found_validation, rule),
        "validation_grid": grid,
        "readers": {
            f"{args.reader} v{version}": {**score(test, found_test, rule), "ms_per_page": service_ms},
        },
        "bars": {"recall": 0.97, "precision": 0.97, "end_to_end_exact": 0.92},
    }
    if not args.skip_easyocr:
        # Cached with each page's reading time, so a re-run reports the time EasyOCR took when it read the page.
        encoded = AnchorCache(args.anchor_cache).read("easyocr_pages", test, read_with_easyocr)
        results["readers"]["easyocr"] = {
            **score(test, [_found_boxes(page) for page in encoded], NumberRule(0.0, 0.0)),
            "ms_per_page": float(np.mean([json.loads(page)["ms"] for page in encoded])),
        }
    results["wall_seconds"] = time.perf_counter() - started
    return results


def markdown(results: dict[str, Any]) -> str:
    pages = results["pages"]
    lines = [
        f"Test: {pages['test_pages']} pages, {pages['test_numbers']} numbers of MNIST test digits. A candidate is a "
        f"number when the reader's best path probability reaches {results['rule']['min_path_probability']:.2f} and "
        f"its glyphs' digit likeness {results['rule']['min_digit_likeness']:.2f}, chosen on "
        f"{pages['validation_pages']} validation "
        f"pages of the {pages['validation_digits']} MNIST training digits that neither the reader nor the check "
        f"trained on (detection F1 there {100 * _f1(results['validation']):.1f} %).",
        "",
        "| reader | recall | precision | end-to-end exact | ms per page (1 thread) |",
        "|---|---|---|---|---|",
    ]
    for name, row in results["readers"].items():
        lines.append(
            f"| {name} | {100 * row['recall']:.1f} % | {100 * row['precision']:.1f} % | "
            f"{100 * row['end_to_end_exact']:.1f} % | {row['ms_per_page']:.0f} |"
        )
    bars = results["bars"]
    lines += ["", f"Bars: recall {100 * bars['recall']:.0f} %, precision {100 * bars['precision']:.0f} %, "
              f"end-to-end exact {100 * bars['end_to_end_exact']:.0f} %.", ""]  # fmt: skip
    return "\n".join(lines)


def _f1(scores: dict[str, float]) -> float:
    total = scores["precision"] + scores["recall"]
    return 2 * scores["precision"] * scores["recall"] / total if total else 0.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.detection",
        description="Score /detect's path and EasyOCR on seeded synthetic pages; write JSON and Markdown.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--store", type=Path, default=Path("model_store"))
    parser.add_argument("--reader", default="reader", help="the line reader's name in the store")
    parser.add_argument("--check", default="check", help="the digit check's name in the store")
    parser.add_argument("--data-dir", type=Path, default=None, help="MNIST IDX files (default as for training)")
    parser.add_argument("--validation-pages", type=int, default=240)
    parser.add_argument("--test-pages", type=int, default=120)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--skip-easyocr", action="store_true", help="score only the service's path")
    parser.add_argument(
        "--anchor-cache", type=Path, default=DEFAULT_ANCHOR_CACHE, help="EasyOCR's readings by page sha256"
    )
    parser.add_argument(
        "--validation-only", action="store_true", help="choose the rule and log it; no test pages, nothing written"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.data_dir = args.data_dir or default_data_dir()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    results = run(args)
    if args.validation_only:
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results))
    logger.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
