"""The recipe's spread over seeds, and the publication of the seed chosen on validation.

Each seed trains the chosen models from scratch with the default recipe (its own validation hold-out, weights,
warps and order), fits temperatures and ensemble weights on its validation split and reads the test set once.
``python -m training.spread --seeds 0 1 2`` writes each seed's validation and test accuracy per model and for
the ensemble, with their mean and sample standard deviation, to ``reports/training/spread.json``; seeds run as
separate processes (``--seeds 0 --out a.json`` ...) are combined with ``--merge a.json b.json ...``.

With ``--stage DIR`` every seed's models are also published into a store of their own (``DIR/seed-N``), and
``--publish`` then copies the models of the seed with the best ensemble *validation* accuracy into the model
store as their next versions: the spread runs are the publishing runs, nothing is trained twice and the test
figures play no part in the choice.
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

from contract import MANIFEST_FILE, MODEL_FILE, Manifest, ModelCard, ModelStore
from training.config import TrainConfig, default_recipe, quick_recipe
from training.data import default_data_dir
from training.models import MODELS
from training.train import run

logger = logging.getLogger(__name__)

DEFAULT_OUT = Path("reports/training/spread.json")
DEFAULT_STORE = Path("model_store")
CHOICE_RULE = "highest ensemble validation accuracy; ties go to the lowest seed"


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


def choose_seed(result: dict[str, Any]) -> int:
    """The seed to publish, by :data:`CHOICE_RULE` (a single model stands in for the ensemble)."""
    runs: dict[str, dict[str, dict[str, float]]] = result["runs"]
    scored = "ensemble" if all("ensemble" in rows for rows in runs.values()) else result["models"][0]
    return int(max(runs, key=lambda seed: (runs[seed][scored]["validation"], -int(seed))))


def republish(source: ModelStore, name: str, version: int, target: ModelStore) -> Manifest:
    """Publish ``source``'s ``name`` v``version`` (model, card and report files) as ``target``'s next version."""
    verified = source.read_verified(name, version)
    card = ModelCard.model_validate(verified.manifest.model_dump(include=set(ModelCard.model_fields)))
    folder = source.version_dir(name, version)
    extra_files = {
        path.name: path.read_bytes()
        for path in sorted(folder.iterdir())
        if path.is_file() and path.name not in (MODEL_FILE, MANIFEST_FILE)
    }
    return target.publish(name, verified.model_bytes, card, extra_files=extra_files)


def publish_chosen(result: dict[str, Any], stage: Path, store: ModelStore) -> dict[str, Any]:
    """Publish the chosen seed's staged models into ``store``; ``result`` with what was published, and why."""
    seed = choose_seed(result)
    staged = stage_store(stage, seed)
    versions = {name: republish(staged, name, staged.resolve(name), store).version for name in result["models"]}
    logger.info("published seed %d (%s) as %s", seed, CHOICE_RULE, versions)
    return {**result, "published": {"seed": seed, "rule": CHOICE_RULE, "versions": versions}}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.spread", description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--dry-run", action="store_true", help="the quick recipe: one epoch on 2,000 images")
    parser.add_argument("--merge", nargs="+", type=Path, help="combine these outputs instead of training")
    parser.add_argument("--stage", type=Path, help="also publish each seed's models into a store DIR/seed-N")
    parser.add_argument(
        "--publish", action="store_true", help="then publish the seed chosen on validation from --stage into --store"
    )
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, help="the model store --publish publishes into")
    args = parser.parse_args(argv)
    if args.publish and args.stage is None:
        parser.error("--publish needs --stage: the folder the seeds' models were staged in")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    if args.merge:
        result = merge([json.loads(path.read_text()) for path in args.merge])
    else:
        result = spread(
            args.models, args.seeds, args.data_dir or default_data_dir(), quick=args.dry_run, stage=args.stage
        )
    if args.publish:
        result = publish_chosen(result, args.stage, ModelStore(args.store))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
