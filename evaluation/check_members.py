"""The published digit check's members against their ensemble, on the check's own validation split.

Each member network inside a published ensemble check (:class:`training.models.MeanLogProbs`) is calibrated as the
trainer calibrates the check (:func:`training.check.calibrate`: its own temperature, and the threshold that passes
the same share of validation digits), so the rows compare how many numbers, letters, symbols and scribbles each
flags at the same cost in digits. Validation data only: this is the evidence for the number of members.
``python -m evaluation.check_members`` writes ``reports/training/check_members.json``.
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
from training.check import STORE_NAME, VALIDATION_PASS_RATE, build_check_validation, calibrate, check_config
from training.data import default_data_dir
from training.train import predict_logits

logger = logging.getLogger(__name__)

DEFAULT_OUT = Path("reports/training/check_members.json")


def compare_members(store: ModelStore, version: int, data_dir: Path) -> dict[str, Any]:
    """Validation figures of the published check ``version`` and of each of its members alone."""
    verified = store.read_verified(STORE_NAME, version)
    seed = int(verified.manifest.training_config["seed"])
    ensemble = load_torchscript(verified.model_bytes)
    if not hasattr(ensemble, "members"):
        raise ValueError(f"{STORE_NAME} v{version} is a single network, not an ensemble")
    validation, parts = build_check_validation(check_config(seed), data_dir)
    networks = {"ensemble": ensemble} | {
        f"member {i} (seed {seed + i})": member for i, member in enumerate(ensemble.members.children())
    }
    rows = {}
    for name, network in networks.items():
        figures = calibrate(predict_logits(network, validation.images, torch.device("cpu")), validation, parts)
        rows[name] = {"threshold": figures.threshold, **{k: figures.validation[k] for k in ("at_threshold", "parts")}}
        at = figures.validation["at_threshold"]
        logger.info(
            "%-22s flags %.2f %% of numbers, %.2f %% of the rest", name,
            100 * at["several_flagged"], 100 * at["not_digit_flagged"],
        )  # fmt: skip
    return {"check": {"name": STORE_NAME, "version": version}, "pass_rate": VALIDATION_PASS_RATE, "networks": rows}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.check_members", description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, default=Path("model_store"))
    parser.add_argument("--version", type=int, help="the check's version (default: latest)")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    store = ModelStore(args.store)
    result = compare_members(store, args.version or store.resolve(STORE_NAME), args.data_dir or default_data_dir())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
