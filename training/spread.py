"""The recipe's spread over seeds: the default command's training and assessment, repeated, nothing published.

Each seed trains the chosen models from scratch with the default recipe (its own validation hold-out, weights,
warps and order), fits temperatures and ensemble weights on its validation split and reads the test set once.
``python -m training.spread --seeds 0 1 2`` writes each seed's validation and test accuracy per model and for
the ensemble, with their mean and sample standard deviation, to ``reports/training/spread.json``; seeds run as
separate processes (``--seeds 0 --out a.json`` ...) are combined with ``--merge a.json b.json ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from contract import ModelStore
from training.config import TrainConfig, default_recipe, quick_recipe
from training.data import default_data_dir
from training.models import MODELS
from training.train import run

DEFAULT_OUT = Path("reports/training/spread.json")


def summarise(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def stage_store(stage: Path, seed: int) -> ModelStore:
    """The store under ``stage`` that holds seed ``seed``'s models until one seed is chosen and published."""
    return ModelStore(stage / f"seed-{seed}")


def spread(
    models: Sequence[str], seeds: Sequence[int], data_dir: Path, quick: bool = False, stage: Path | None = None
) -> dict[str, Any]:
    """Train and assess ``models`` once per seed; per-seed accuracies and their summaries.

    ``quick`` uses the smoke-test recipe (one epoch on 2,000 images) instead of the default one. With ``stage``,
    each seed's models are published into their own store there (see :func:`stage_store`), so the chosen seed can
    be published without training it again.
    """
    runs: dict[str, dict[str, dict[str, float]]] = {}
    for seed in seeds:
        configs = {name: default_recipe(TrainConfig(seed=seed), name) for name in models}
        if quick:
            configs = {name: quick_recipe(config) for name, config in configs.items()}
        store = stage_store(stage, seed) if stage is not None else None
        summary = run(configs, data_dir, store, torch.device("cpu"))
        ensemble = summary["ensemble"]
        rows = {
            name: {
                "validation": row["validation_accuracy"],
                "test": row["accuracy"],
                "seconds": row["train_seconds"],
                "weight": ensemble["weights"][name] if ensemble else 1.0,
            }
            for name, row in summary["models"].items()
        }
        if ensemble is not None:
            rows["ensemble"] = {"validation": ensemble["validation_accuracy"], "test": ensemble["accuracy"]}
        runs[str(seed)] = rows
    return _result("quick" if quick else "default", models, runs)


def _result(recipe: str, models: Sequence[str], runs: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    names = list(next(iter(runs.values())))
    return {
        "recipe": recipe,
        "models": list(models),
        "seeds": [int(seed) for seed in runs],
        "runs": runs,
        "summary": {
            name: {split: summarise([run[name][split] for run in runs.values()]) for split in ("validation", "test")}
            for name in names
        },
    }


def merge(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One result from several runs of the same recipe and models over different seeds."""
    if len({(r["recipe"], tuple(r["models"])) for r in results}) != 1:
        raise ValueError("only runs of the same recipe and models can be merged")
    runs: dict[str, dict[str, dict[str, float]]] = {}
    for result in results:
        if runs.keys() & result["runs"].keys():
            raise ValueError(f"seed {sorted(runs.keys() & result['runs'].keys())} appears twice")
        runs.update(result["runs"])
    return _result(results[0]["recipe"], results[0]["models"], dict(sorted(runs.items(), key=lambda i: int(i[0]))))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.spread", description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--dry-run", action="store_true", help="the quick recipe: one epoch on 2,000 images")
    parser.add_argument("--merge", nargs="+", type=Path, help="combine these outputs instead of training")
    parser.add_argument("--stage", type=Path, help="publish each seed's models into DIR/seed-N (nothing else)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    if args.merge:
        result = merge([json.loads(path.read_text()) for path in args.merge])
    else:
        result = spread(
            args.models, args.seeds, args.data_dir or default_data_dir(), quick=args.dry_run, stage=args.stage
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
