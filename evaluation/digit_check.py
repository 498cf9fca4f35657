"""The digit check on held-out images: does it pass real single digits and flag everything else?

Every image here is unseen in training and calibration: MNIST's official test digits (as they are, and re-rendered
as scans, canvas drawings and phone photos through the service's preprocessing), USPS digits from other writers,
numbers composed from MNIST test digits, letters and symbols in font families the check never saw, and scribbles
from other random draws. For each category it reports the share that passes (digits) or is flagged (the rest) at
the published threshold, the bars, and the trade-off over thresholds; beside it, the same operating point for the
served ensemble's confidence, the score a client had before. ``python -m evaluation.digit_check`` writes
``reports/digit_check.json`` and ``reports/digit_check.png``.
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
from evaluation.report import save_png
from evaluation.run import DEFAULT_USPS, combine, frame_usps, load_members, load_usps, predict_log_probs
from service.registry import load_model
from training.check import ONE_DIGIT, STORE_NAME, choose_threshold, pass_probabilities
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
from training.upload_styles import STYLES, through_service

logger = logging.getLogger(__name__)

# The bars: real single digits that must pass, and the other kinds that must be flagged.
DIGIT_PASS_BAR = 0.99
NOT_DIGIT_FLAG_BAR = 0.95
SEVERAL_FLAG_BAR = 0.98
# Draws unlike any the trainer used (it uses seeds 100*seed + 1 and + 2).
_HELD_OUT_SEED = 7_919
_THRESHOLDS = np.round(np.linspace(0.01, 0.99, 99), 2).tolist()


@dataclass(frozen=True)
class Category:
    """Held-out images of one kind: ``kind`` is "one digit", "several digits" or "not a digit"."""

    name: str
    kind: str
    images: npt.NDArray[np.uint8]
    refused: npt.NDArray[np.bool_]


def _as_uint8(images: torch.Tensor) -> npt.NDArray[np.uint8]:
    return (images.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).squeeze(1).numpy()


def _uploads(
    name: str, kind: str, images: npt.NDArray[np.uint8] | list[npt.NDArray[np.float32]], style: str, seed: int
) -> Category:
    prepared, refused = through_service(images, STYLES[style], seed)
    return Category(name, kind, prepared, refused)


def held_out_categories(data_dir: Path, usps_path: Path, per_style: int) -> list[Category]:
    """The held-out images, each category at most ``per_style`` uploads (MNIST as it is: all 10,000)."""
    mnist, _ = load_mnist(data_dir, "test")
    digits = mnist.numpy()
    sample = digits[:per_style]
    usps, _ = load_usps(usps_path)
    usps_framed = _as_uint8(frame_usps(usps))
    seed = _HELD_OUT_SEED
    number_ink = number_inks(digits, per_style, seed)
    numbers = np.stack([canonicalise(ink) for ink in number_ink])
    letters = render_glyphs(per_style, HELD_OUT_FONTS, LETTERS, seed)
    symbols = render_glyphs(per_style, HELD_OUT_FONTS, SYMBOLS, seed)
    categories = [Category("MNIST test", "one digit", digits, np.zeros(len(digits), dtype=np.bool_))]
    categories += [_uploads(f"MNIST {style}", "one digit", sample, style, seed) for style in STYLES]
    categories += [
        _uploads("USPS scan", "one digit", usps_framed, "scan", seed),
        Category("numbers", "several digits", numbers, np.zeros(len(numbers), dtype=np.bool_)),
        _uploads("numbers scan", "several digits", number_ink, "scan", seed),
        _uploads("numbers photo", "several digits", number_ink, "photo", seed + 1),
        Category("letters", "not a digit", letters, np.zeros(len(letters), dtype=np.bool_)),
        _uploads("letters scan", "not a digit", letters, "scan", seed),
        Category("symbols", "not a digit", symbols, np.zeros(len(symbols), dtype=np.bool_)),
        Category("scribbles", "not a digit", render_scribbles(per_style, seed), np.zeros(per_style, dtype=np.bool_)),
    ]
    return categories


def _inputs(images: npt.NDArray[np.uint8]) -> torch.Tensor:
    return torch.from_numpy(images).float().div(255.0).unsqueeze(1)


def _rate(scores: torch.Tensor, refused: npt.NDArray[np.bool_], kind: str, threshold: float) -> float:
    """Share of the category on the right side of ``threshold``; a refused upload (422) never passes as a digit."""
    passed = (scores >= threshold) & ~torch.from_numpy(refused)
    good = passed if kind == "one digit" else ~passed
    return float(good.double().mean())


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
    store: ModelStore, version: int | None, data_dir: Path, usps_path: Path, per_style: int
) -> dict[str, Any]:
    """Score every held-out category with the check (and the ensemble's confidence) and summarise."""
    device = torch.device("cpu")
    check = load_model(store, STORE_NAME, version or store.resolve(STORE_NAME), device)
    threshold = check.manifest.pass_threshold or 0.5
    members = load_members(store, {}, select_device("cpu"))
    categories = held_out_categories(data_dir, usps_path, per_style)
    check_scores, ensemble_scores = {}, {}
    with torch.inference_mode():
        for category in categories:
            inputs = _inputs(category.images)
            check_scores[category.name] = pass_probabilities(check.module(inputs), check.manifest.temperature)
            log_probs = [predict_log_probs(member, inputs) for member in members]
            ensemble_scores[category.name] = combine(members, log_probs).max(dim=1).values
    # The ensemble's confidence at the operating point where it passes as many MNIST test digits as the check does.
    check_pass = _rate(check_scores["MNIST test"], categories[0].refused, "one digit", threshold)
    ensemble_threshold = choose_threshold(ensemble_scores["MNIST test"], check_pass)
    return {
        "check": {"name": check.name, "version": check.version, "threshold": threshold},
        "ensemble": {name: m.manifest.version for name, m in ((m.name, m) for m in members)},
        "categories": measure(categories, check_scores, threshold, bars=True),
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
    axis.axvline(
        result["categories"]["MNIST test"]["rate"],
        color="black",
        linestyle=":",
        linewidth=1,
        label="published threshold",
    )
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.digit_check", description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, default=Path("model_store"))
    parser.add_argument("--version", type=int, help="the check's version (default: latest)")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--usps", type=Path, default=DEFAULT_USPS)
    parser.add_argument("--per-style", type=int, default=1000, help="images per held-out category")
    parser.add_argument("--out", type=Path, default=Path("reports"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    result = evaluate_check(
        ModelStore(args.store), args.version, args.data_dir or default_data_dir(), args.usps, args.per_style
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "digit_check.json").write_text(json.dumps(result, indent=2))
    plot_trade_off(result, args.out / "digit_check.png")
    for name, row in result["categories"].items():
        logger.info("%-14s %-15s %6.2f %% (bar %.0f %%)", name, row["kind"], 100 * row["rate"], 100 * row["bar"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
