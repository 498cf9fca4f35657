"""Published digit check versions side by side on the trainer's current validation split.

A recipe change to the check (more images of one upload style, say) is chosen by comparing the new version with the
one before on the same validation images. Each version is calibrated as the trainer calibrates the check
(:func:`training.check.calibrate`: its own temperature, and the threshold that passes the same share of every kind
of validation digit), so the rows compare how many numbers, letters, symbols and scribbles each flags, and which
upload style's digits it loses, at the same cost in digits. Validation data only: no held-out image is read.
``python -m evaluation.check_validation --versions 3 4`` writes ``reports/training/check_validation.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from contract import ModelStore
from contract.torchscript import load_torchscript
from training.check import (
    DRY_RUN_SCALE,
    STORE_NAME,
    VALIDATION_PASS_RATE,
    build_check_validation,
    calibrate,
    check_config,
)
from training.data import default_data_dir
from training.train import predict_logits

logger = logging.getLogger(__name__)

DEFAULT_OUT = Path("reports/training/check_validation.json")


def compare_versions(store: ModelStore, versions: Sequence[int], data_dir: Path, scale: float = 1.0) -> dict[str, Any]:
    """Validation figures of each published check version, on the validation split they share (``scale`` shrinks
    it, as the trainer's quick mode does)."""
    verified = {version: store.read_verified(STORE_NAME, version) for version in versions}
    seeds = {int(v.manifest.training_config["seed"]) for v in verified.values()}
    if len(seeds) != 1:
        raise ValueError(f"versions {list(versions)} hold out different validation digits (seeds {sorted(seeds)})")
    validation, parts = build_check_validation(check_config(seeds.pop()), data_dir, scale)
    rows = {}
    for version, stored in verified.items():
        logits = predict_logits(load_torchscript(stored.model_bytes), validation.images, torch.device("cpu"))
        calibration = calibrate(logits, validation, parts)
        rows[str(version)] = {
            "threshold": calibration.threshold,
            **{key: calibration.validation[key] for key in ("at_threshold", "parts")},
        }
        at = calibration.validation["at_threshold"]
        logger.info(
            "check v%d flags %.2f %% of numbers, %.2f %% of the rest", version,
            100 * at["several_flagged"], 100 * at["not_digit_flagged"],
        )  # fmt: skip
    return {"pass_rate": VALIDATION_PASS_RATE, "validation_images": len(validation), "versions": rows}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.check_validation", description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, default=Path("model_store"))
    parser.add_argument("--versions", type=int, nargs="+", required=True, help="the check versions to compare")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--dry-run", action="store_true", help="a twentieth of the validation images")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = compare_versions(
        ModelStore(args.store),
        args.versions,
        args.data_dir or default_data_dir(),
        DRY_RUN_SCALE if args.dry_run else 1.0,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
