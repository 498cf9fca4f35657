"""The digit check on held-out images: does it pass real single digits and flag everything else?

Every image here is unseen in training and calibration: MNIST's official test digits as they are and every
category of the realistic upload suite (:mod:`evaluation.uploads`: MNIST test and USPS digits rendered as scans,
photos, canvas drawings ... and sent through the service's preprocessing), numbers composed from MNIST test
digits, letters and symbols in font families the check never saw, and scribbles from other random draws; the
negatives are sent as uploads too (scans, phone photos, canvas drawings, :mod:`evaluation.renderings`). For each
category it reports the share that passes (digits) or is flagged (the rest) at the published threshold, the bars,
how often a flagged image's reason names its kind, how often the ensemble reads a flagged digit right, and the
trade-off over thresholds; beside it, the same operating point for the served ensemble's confidence, the score a
client had before. ``python -m evaluation.digit_check`` writes ``reports/digit_check.json``,
``reports/digit_check.png`` (the trade-off) and ``reports/digit_check_flagged.png`` (the digits it turns away,
as the check sees them).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
import torch

from contract import ModelStore
from contract.device import select_device
from contract.ensemble import calibrated_log_probs
from evaluation import renderings
from evaluation.report import save_png
from evaluation.run import DEFAULT_USPS, combine, load_members, predict_log_probs
from evaluation.uploads import build_suite, prepare_uploads
from service.inference import CheckResult, check_results
from service.registry import load_model
from training.check import ONE_DIGIT, STORE_NAME, choose_threshold
from training.data import default_data_dir, load_mnist
from training.negatives import (
    HELD_OUT_FONTS,
    LETTERS,
    SYMBOLS,
    canonicalise,
    number_inks,
    render_glyphs,
    render_scribbles,
)

logger = logging.getLogger(__name__)

# The bars: real single digits that must pass, and the other kinds that must be flagged.
DIGIT_PASS_BAR = 0.99
NOT_DIGIT_FLAG_BAR = 0.95
SEVERAL_FLAG_BAR = 0.98
# Draws unlike any the trainer used (it uses seeds 100*seed + 1 and + 2). Seed 7,919 drew the first held-out set and
# 104,729 the second; both were read for check version 3 and for candidates whose recipes changed after reading, and
# the second's trade-off curve was seen before the threshold rule became per kind of digit. This draw is fresh, except
# that every draw takes 1,000 of the same 2,007 USPS digits.
HELD_OUT_SEED = 1_299_709
# Per category. Every one of 21 digit categories must reach 99 %: at 1,000 images a check that truly passes 99.7 %
# meets all 21 bars 99.4 % of the time, at 400 images only 85 % (binomial), so a failed bar means something.
CHECK_IMAGES_PER_CATEGORY = 1_000
_THRESHOLDS = np.round(np.linspace(0.01, 0.99, 99), 2).tolist()
# Flagged digits shown per category in the picture, lowest score first.
FLAGGED_SHOWN = 12


@dataclass(frozen=True)
class Category:
    """Held-out images of one kind: ``kind`` is "one digit", "several digits" or "not a digit"; ``labels`` are the
    digits' true classes (None for the other kinds)."""

    name: str
    kind: str
    images: npt.NDArray[np.uint8]
    refused: npt.NDArray[np.bool_]
    labels: torch.Tensor | None = None


def _canonical(name: str, kind: str, images: npt.NDArray[np.uint8], labels: torch.Tensor | None = None) -> Category:
    return Category(name, kind, images, np.zeros(len(images), dtype=np.bool_), labels)


def _sent(name: str, kind: str, uploads: Sequence[bytes], labels: torch.Tensor | None = None) -> Category:
    inputs, refused = prepare_uploads(uploads)
    images = (inputs.squeeze(1) * 255.0).round().to(torch.uint8).numpy()
    return Category(name, kind, images, refused.numpy(), labels)


def _rendered(inks: Sequence[npt.NDArray[np.float32]], render: renderings.Rendering, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [render(ink, rng) for ink in inks]


def held_out_categories(
    data_dir: Path, usps_path: Path, per_category: int, seed: int = HELD_OUT_SEED
) -> list[Category]:
    """The held-out images: MNIST test as it is (all 10,000), then at most ``per_category`` per category, drawn
    with ``seed``."""
    mnist, mnist_labels = load_mnist(data_dir, "test")
    digits = mnist.numpy()
    categories = [_canonical("MNIST test", "one digit", digits, mnist_labels)]
    suite = build_suite(per_category, seed, data_dir, usps_path)
    categories += [_sent(category.name, "one digit", category.uploads, category.labels) for category in suite]
    number_ink = number_inks(digits, per_category, seed)
    letters = render_glyphs(per_category, HELD_OUT_FONTS, LETTERS, seed)
    letter_ink = [image.astype(np.float32) / 255.0 for image in letters]
    categories += [
        _canonical("numbers", "several digits", np.stack([canonicalise(ink) for ink in number_ink])),
        _sent("numbers, scan", "several digits", _rendered(number_ink, renderings.scan_tight_some_sides, seed)),
        _sent("numbers, phone photo", "several digits", _rendered(number_ink, renderings.phone_photo, seed)),
        _sent("numbers, canvas", "several digits", _rendered(number_ink, renderings.canvas_thick, seed)),
        _canonical("letters", "not a digit", letters),
        _sent("letters, scan", "not a digit", _rendered(letter_ink, renderings.scan_tight_some_sides, seed)),
        _sent("letters, phone photo", "not a digit", _rendered(letter_ink, renderings.phone_photo, seed)),
        _canonical("symbols", "not a digit", render_glyphs(per_category, HELD_OUT_FONTS, SYMBOLS, seed)),
        _canonical("scribbles", "not a digit", render_scribbles(per_category, seed)),
    ]
    return categories


def _inputs(images: npt.NDArray[np.uint8]) -> torch.Tensor:
    return torch.from_numpy(images).float().div(255.0).unsqueeze(1)


def _rate(scores: torch.Tensor, refused: npt.NDArray[np.bool_], kind: str, threshold: float) -> float:
    """Share of the category on the right side of ``threshold``; a refused upload (422) never passes as a digit."""
    passed = (scores >= threshold) & ~torch.from_numpy(refused)
    good = passed if kind == "one digit" else ~passed
    return float(good.double().mean())


def right_reason(verdicts: Sequence[CheckResult], category: Category) -> float | None:
    """Of a negative category's flagged images, the share whose ``reason`` (as the service gives it) names the
    category's kind; None for digits."""
    if category.kind == "one digit":
        return None
    reasons = [verdict.reason for verdict in verdicts if not verdict.one_digit]
    return sum(reason == category.kind for reason in reasons) / len(reasons) if reasons else 0.0


def _flagged(scores: torch.Tensor, category: Category, threshold: float) -> torch.Tensor:
    """Which of the category's uploads reach the models but are flagged."""
    return (scores < threshold) & ~torch.from_numpy(category.refused)


def flagged_read_right(
    scores: torch.Tensor, readings: torch.Tensor, category: Category, threshold: float
) -> float | None:
    """Of a digit category's uploads that reach the models but are flagged, the share the ensemble reads right: high
    means the check refuses good digits, low that it catches ones the models would misread. None for other kinds
    and when nothing is flagged."""
    flagged = _flagged(scores, category, threshold)
    if category.labels is None or not flagged.any():
        return None
    return float((readings[flagged] == category.labels[flagged]).double().mean())


@dataclass(frozen=True)
class FlaggedDigits:
    """A digit category's flagged images as the models see them, lowest check score first, with their true
    labels, the ensemble's readings and the check's scores."""

    images: npt.NDArray[np.uint8]
    labels: list[int]
    readings: list[int]
    scores: list[float]


def lowest_flagged(
    scores: torch.Tensor, readings: torch.Tensor, category: Category, threshold: float, count: int = FLAGGED_SHOWN
) -> FlaggedDigits | None:
    """The ``count`` flagged images of a digit category with the lowest scores; None for other kinds and when
    nothing is flagged."""
    flagged = _flagged(scores, category, threshold)
    if category.labels is None or not flagged.any():
        return None
    indices = torch.nonzero(flagged).squeeze(1)
    shown = indices[scores[indices].argsort()[:count]]
    return FlaggedDigits(
        category.images[shown.numpy()],
        category.labels[shown].tolist(),
        readings[shown].tolist(),
        scores[shown].tolist(),
    )


def measure(
    categories: Sequence[Category], scores: Mapping[str, torch.Tensor], threshold: float, bars: bool
) -> dict[str, Any]:
    """Per category: its size, refusals, the rate at ``threshold`` and (with ``bars``) whether it meets its bar."""
    rows: dict[str, Any] = {}
    for category in categories:
        rate = _rate(scores[category.name], category.refused, category.kind, threshold)
        row: dict[str, Any] = {
            "kind": category.kind,
            "images": len(category.images),
            "refused": int(category.refused.sum()),
            "rate": rate,
        }
        if bars:
            bar = {"one digit": DIGIT_PASS_BAR, "several digits": SEVERAL_FLAG_BAR}.get(
                category.kind, NOT_DIGIT_FLAG_BAR
            )
            row.update(bar=bar, meets_bar=rate >= bar)
        rows[category.name] = row
    return rows


def evaluate_check(
    store: ModelStore, version: int | None, data_dir: Path, usps_path: Path, per_category: int, seed: int
) -> tuple[dict[str, Any], dict[str, FlaggedDigits]]:
    """Score every held-out category with the check (and the ensemble's confidence); return the summary and, per
    digit category with flagged images, the lowest-scoring of them."""
    device = torch.device("cpu")
    check = load_model(store, STORE_NAME, version or store.resolve(STORE_NAME), device)
    threshold = check.manifest.pass_threshold or 0.5
    members = load_members(store, {}, select_device("cpu"))
    categories = held_out_categories(data_dir, usps_path, per_category, seed)
    check_scores, ensemble_scores, reasons, read_right, flagged = {}, {}, {}, {}, {}
    with torch.inference_mode():
        for category in categories:
            inputs = _inputs(category.images)
            probabilities = calibrated_log_probs(check(inputs), check.manifest.temperature).exp()
            check_scores[category.name] = probabilities[:, ONE_DIGIT]
            reasons[category.name] = right_reason(check_results(check, probabilities), category)
            log_probs = [predict_log_probs(member, inputs) for member in members]
            best, readings = combine(members, log_probs).max(dim=1)
            ensemble_scores[category.name] = best
            read_right[category.name] = flagged_read_right(check_scores[category.name], readings, category, threshold)
            flagged[category.name] = lowest_flagged(check_scores[category.name], readings, category, threshold)
    # The ensemble's confidence at the operating point where it passes as many MNIST test digits as the check does.
    check_pass = _rate(check_scores["MNIST test"], categories[0].refused, "one digit", threshold)
    ensemble_threshold = choose_threshold(ensemble_scores["MNIST test"], check_pass)
    summary = {
        "check": {"name": check.name, "version": check.version, "threshold": threshold},
        "draw": {"seed": seed, "per_category": per_category},
        "ensemble": {name: m.manifest.version for name, m in ((m.name, m) for m in members)},
        "categories": measure(categories, check_scores, threshold, bars=True),
        "right_reason": {name: share for name, share in reasons.items() if share is not None},
        "flagged_digits_read_right": {name: share for name, share in read_right.items() if share is not None},
        "ensemble_confidence": {
            "threshold": ensemble_threshold,
            "categories": measure(categories, ensemble_scores, ensemble_threshold, bars=False),
        },
        "trade_off": [
            {"threshold": t, **{c.name: _rate(check_scores[c.name], c.refused, c.kind, t) for c in categories}}
            for t in _THRESHOLDS
        ],
        "one_digit_class": ONE_DIGIT,
    }
    return summary, {name: digits for name, digits in flagged.items() if digits is not None}


def plot_trade_off(result: Mapping[str, Any], path: Path) -> None:
    """Share of each flagged kind against the share of single digits passing, over thresholds."""
    rows = result["trade_off"]
    kinds = {name: row["kind"] for name, row in result["categories"].items()}
    digit_names = [name for name, kind in kinds.items() if kind == "one digit"]
    worst_pass = [min(row[name] for name in digit_names) for row in rows]
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name, kind in kinds.items():
        if kind != "one digit":
            axis.plot(worst_pass, [row[name] for row in rows], label=name)
    axis.axvline(DIGIT_PASS_BAR, color="grey", linestyle="--", linewidth=1)
    published = min(result["categories"][name]["rate"] for name in digit_names)
    axis.axvline(published, color="black", linestyle=":", linewidth=1, label="published threshold")
    axis.set_xlabel("single digits passing (worst category)")
    axis.set_ylabel("share flagged")
    axis.set_xlim(0.9, 1.0)
    axis.set_ylim(0.5, 1.0)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower left")
    axis.set_title("Digit check: held-out trade-off over thresholds")
    figure.tight_layout()
    save_png(figure, path)
    plt.close(figure)


def plot_flagged(flagged: Mapping[str, FlaggedDigits], path: Path) -> None:
    """One row per digit category: its flagged images as the check saw them, titled true label, the ensemble's
    reading and the check's score."""
    rows = max(1, len(flagged))
    label_inches, title_inches = 2.6, 0.5
    width, height = label_inches + FLAGGED_SHOWN * 0.9, title_inches + rows * 1.15
    figure, axes = plt.subplots(rows, FLAGGED_SHOWN, figsize=(width, height), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for row, (name, digits) in zip(axes, flagged.items(), strict=False):
        row[0].text(-0.1, 0.5, name, transform=row[0].transAxes, ha="right", va="center", fontsize=8)
        for axis, image, label, reading, score in zip(
            row, digits.images, digits.labels, digits.readings, digits.scores, strict=False
        ):
            axis.imshow(image, cmap="gray", vmin=0, vmax=255)
            axis.set_title(f"{label} read {reading}, {score:.2f}", fontsize=6)
    figure.suptitle(
        "Digits the check flags, lowest score first (true label, ensemble's reading, check's score)",
        y=1 - 0.1 / height,
        va="top",
    )
    figure.subplots_adjust(
        left=label_inches / width, right=0.99, top=1 - title_inches / height, bottom=0.01, hspace=0.5
    )
    save_png(figure, path)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.digit_check", description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, default=Path("model_store"))
    parser.add_argument("--version", type=int, help="the check's version (default: latest)")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--usps", type=Path, default=DEFAULT_USPS)
    parser.add_argument(
        "--per-category", type=int, default=CHECK_IMAGES_PER_CATEGORY, help="images per held-out category"
    )
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="seed of the held-out draw")
    parser.add_argument("--out", type=Path, default=Path("reports"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    result, flagged = evaluate_check(
        ModelStore(args.store),
        args.version,
        args.data_dir or default_data_dir(),
        args.usps,
        args.per_category,
        args.seed,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "digit_check.json").write_text(json.dumps(result, indent=2))
    plot_trade_off(result, args.out / "digit_check.png")
    plot_flagged(flagged, args.out / "digit_check_flagged.png")
    for name, row in result["categories"].items():
        logger.info("%-40s %-15s %6.2f %% (bar %.0f %%)", name, row["kind"], 100 * row["rate"], 100 * row["bar"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
