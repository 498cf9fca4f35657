"""The realistic upload suite: MNIST *test* digits and USPS test digits rendered the ways users send one digit
(:mod:`evaluation.renderings`), each sent through the service's own preprocessing (:func:`imaging.digit.prepare_digit`)
and read by every served model and the ensemble.

``python -m evaluation.uploads`` writes ``reports/uploads.json`` and ``reports/uploads.md``. For each category: how
many uploads were refused as "no digit", each model's and the ensemble's accuracy (a refusal counts as an error),
and the reference: the ensemble's accuracy on the very same digits given as the original 28x28 dataset images
(for USPS, on the same digits with a margin), so what preprocessing loses is the difference.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contract import IMAGE_SIZE, ModelStore
from contract.device import select_device
from evaluation import renderings
from evaluation.run import add_data_arguments, combine, load_members, load_usps, parse_pins, predict_log_probs
from imaging.decoding import DecodeLimits
from imaging.digit import prepare_digit
from imaging.errors import ImagingError
from service.registry import LoadedModel
from training.data import default_data_dir, load_mnist

logger = logging.getLogger(__name__)

DEFAULT_OUT = Path("reports")
# Enough images per category that one error moves accuracy by 0.25 points; the whole suite runs in minutes.
IMAGES_PER_CATEGORY = 400
ENSEMBLE = "ensemble"
# The service's default pixel limit, so large photos are handled as they would be in production.
LIMITS = DecodeLimits(max_image_pixels=25_000_000)
# The rendered MNIST categories, each from its own seeded draw of test digits.
MNIST_CATEGORIES: dict[str, renderings.Rendering] = {
    "scan, tight crop on all sides": renderings.scan_tight,
    "scan, tight on 1-3 sides": renderings.scan_tight_some_sides,
    "small digit (12-40 px)": renderings.small_digit,
    "large photo (> 1,000 px, JPEG)": renderings.large_photo,
    "bilevel PNG": renderings.bilevel_png,
    "bilevel BMP": renderings.bilevel_bmp,
    "bilevel TIFF (group 4)": renderings.bilevel_tiff,
    "16-bit grey PNG": renderings.grey16_png,
    "8-bit scan, paper noise": renderings.noisy_scan,
    "phone photo (JPEG, light, cast, blur)": renderings.phone_photo,
    "photo lit from one side (320x240 JPEG)": renderings.side_lit_photo,
    "blue ballpoint photo": renderings.blue_ballpoint,
    "pencil": renderings.pencil,
    "canvas RGBA, thick pen": renderings.canvas_thick,
    "canvas RGBA, thin pen": renderings.canvas_thin,
    "LA, ink in alpha": renderings.la_alpha_ink,
    "light ink on dark": renderings.light_on_dark,
    "slanted up to 15 degrees": renderings.slanted,
    "thin strokes": renderings.thin_strokes,
    "bold strokes": renderings.bold_strokes,
}
USPS_EDGE = "USPS, edge to edge"
USPS_MARGIN = "USPS, 2-pixel margin"


@dataclass(frozen=True)
class Category:
    """One category's uploads, their labels, and the reference inputs the same digits give without preprocessing."""

    name: str
    uploads: list[bytes]
    labels: torch.Tensor
    reference: torch.Tensor  # (N, 1, 28, 28) model inputs, or empty for categories compared with another one


def build_suite(per_category: int, seed: int, data_dir: Path, usps_path: Path) -> list[Category]:
    """Render every category; the same ``seed`` gives the same files byte for byte."""
    digits, labels = load_mnist(data_dir, "test")
    inks = digits.numpy().astype(np.float32) / 255.0
    suite = []
    for name, render in MNIST_CATEGORIES.items():
        # Seeded by name: adding a category leaves every other category's digits and draws as they were.
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        chosen = rng.choice(len(inks), size=min(per_category, len(inks)), replace=False)
        uploads = [render(inks[i], rng) for i in chosen]
        reference = torch.from_numpy(inks[chosen]).unsqueeze(1)
        suite.append(Category(name, uploads, labels[chosen], reference))
    usps_digits, usps_labels = load_usps(usps_path)
    rng = np.random.default_rng([seed, zlib.crc32(USPS_EDGE.encode())])
    chosen = rng.choice(len(usps_digits), size=min(per_category, len(usps_digits)), replace=False)
    usps_inks = usps_digits.numpy()[chosen].astype(np.float32) / 255.0
    empty = torch.empty(0, 1, IMAGE_SIZE, IMAGE_SIZE)
    for name, render in ((USPS_EDGE, renderings.dataset_image), (USPS_MARGIN, renderings.dataset_image_with_margin)):
        suite.append(Category(name, [render(ink, rng) for ink in usps_inks], usps_labels[chosen], empty))
    return suite


def prepare_uploads(uploads: Sequence[bytes]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, 1, 28, 28)`` model inputs and an ``(N,)`` mask of refusals (blank inputs, so they count as errors)."""
    inputs = torch.zeros(len(uploads), 1, IMAGE_SIZE, IMAGE_SIZE)
    refused = torch.zeros(len(uploads), dtype=torch.bool)
    for index, upload in enumerate(uploads):
        try:
            inputs[index] = torch.from_numpy(prepare_digit(upload, LIMITS).pixels)
        except ImagingError:
            refused[index] = True
    return inputs, refused


def _accuracies(members: Sequence[LoadedModel], inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    log_probs = [predict_log_probs(member, inputs) for member in members]
    predictions = {m.name: lp.argmax(dim=1) for m, lp in zip(members, log_probs, strict=True)}
    predictions[ENSEMBLE] = combine(members, log_probs).argmax(dim=1)
    return {name: float((predicted == labels).float().mean()) for name, predicted in predictions.items()}


def evaluate(suite: Sequence[Category], members: Sequence[LoadedModel]) -> dict[str, dict[str, Any]]:
    """Per category: count, refusals, accuracies through preprocessing, and the reference accuracy."""
    results: dict[str, dict[str, Any]] = {}
    for category in suite:
        started = time.perf_counter()
        inputs, refused = prepare_uploads(category.uploads)
        accuracy = _accuracies(members, inputs, category.labels)
        row: dict[str, Any] = {
            "images": len(category.uploads),
            "refused": int(refused.sum()),
            "accuracy": accuracy,
            "mean_upload_bytes": round(sum(map(len, category.uploads)) / len(category.uploads)),
            "seconds": round(time.perf_counter() - started, 2),
        }
        if len(category.reference):
            row["reference_accuracy"] = _accuracies(members, category.reference, category.labels)[ENSEMBLE]
        results[category.name] = row
        logger.info("%s: %d refused, ensemble %.2f %%", category.name, row["refused"], 100 * accuracy[ENSEMBLE])
    if USPS_EDGE in results and USPS_MARGIN in results:
        results[USPS_EDGE]["reference_accuracy"] = results[USPS_MARGIN]["accuracy"][ENSEMBLE]
    return results


def markdown_table(results: dict[str, dict[str, Any]], model_names: Sequence[str]) -> str:
    """The README's table: one row per category, accuracies in per cent."""
    header = ["category", "images", "refused", *model_names, ENSEMBLE, "reference", "difference"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in results.items():
        accuracy = row["accuracy"]
        reference = row.get("reference_accuracy")
        cells = [
            name,
            f"{row['images']:,}",
            str(row["refused"]),
            *(f"{100 * accuracy[m]:.2f} %" for m in model_names),
            f"**{100 * accuracy[ENSEMBLE]:.2f} %**",
            "" if reference is None else f"{100 * reference:.2f} %",
            "" if reference is None else f"{100 * (accuracy[ENSEMBLE] - reference):+.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.uploads",
        description="Render the realistic upload suite, read it through the service's preprocessing, report.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_data_arguments(parser)
    parser.add_argument("--per-category", type=int, default=IMAGES_PER_CATEGORY, help="uploads per category")
    parser.add_argument("--seed", type=int, default=0, help="picks the digits and every rendering's random draws")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for uploads.json and uploads.md")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    members = load_members(ModelStore(args.store), parse_pins(args.versions), select_device("cpu"))
    suite = build_suite(args.per_category, args.seed, args.data_dir or default_data_dir(), args.usps)
    results = evaluate(suite, members)
    names = [member.name for member in members]
    versions = {member.name: member.version for member in members}
    output = {"seed": args.seed, "per_category": args.per_category, "versions": versions, "categories": results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "uploads.json").write_text(json.dumps(output, indent=2) + "\n")
    (args.out / "uploads.md").write_text(markdown_table(results, names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
