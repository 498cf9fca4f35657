"""What each committed 28x28 network costs the inference process: forward time at batch 1 and at a full batch.

Every digit classifier and every digit check version in the store, loaded as the service loads them (the
registry's verified TorchScript), on one torch thread as the service runs per process. Each model is timed in
turn within a round and rounds are interleaved, so a slow spell of a noisy machine hits every model alike; the
JSON holds each model's median over the rounds, in milliseconds per forward pass, and ``per_image_us`` at the full
batch. ``python -m bench.model_cost`` writes ``bench/results/model_cost.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
from pathlib import Path

import torch

from contract import IMAGE_SIZE, ModelStore
from evaluation.run import run_timings
from harness.server import REPO_ROOT
from service.registry import LoadedModel, load_model

logger = logging.getLogger("bench.model_cost")

OUT = REPO_ROOT / "bench" / "results" / "model_cost.json"
FULL_BATCH = 32
_KINDS = ("digit_classifier", "digit_check")


def store_models(store: ModelStore) -> list[LoadedModel]:
    """Every version of every 28x28 network in ``store`` (line readers are timed by ``bench.read_latency``)."""
    device = torch.device("cpu")
    models = []
    for name in store.model_names():
        for version in store.versions(name):
            if store.read_manifest(name, version).kind in _KINDS:
                models.append(load_model(store, name, version, device))
    return models


def forward_ms(model: LoadedModel, batch: torch.Tensor, repeats: int) -> float:
    """Mean milliseconds of ``repeats`` forward passes of ``batch``, after a warm-up."""
    with torch.inference_mode():
        return 1e3 * statistics.fmean(run_timings(lambda: model(batch), repeats, lambda: None))


def measure(models: list[LoadedModel], rounds: int, repeats: int) -> dict[str, dict[str, float]]:
    batches = {size: torch.rand(size, 1, IMAGE_SIZE, IMAGE_SIZE) for size in (1, FULL_BATCH)}
    timings: dict[str, dict[int, list[float]]] = {f"{m.name} v{m.version}": {1: [], FULL_BATCH: []} for m in models}
    for _ in range(rounds):
        for model in models:
            for size, batch in batches.items():
                timings[f"{model.name} v{model.version}"][size].append(forward_ms(model, batch, repeats))
    results = {}
    for key, by_size in timings.items():
        full = statistics.median(by_size[FULL_BATCH])
        results[key] = {
            "batch_1_ms": statistics.median(by_size[1]),
            f"batch_{FULL_BATCH}_ms": full,
            "per_image_us": 1e3 * full / FULL_BATCH,
        }
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.model_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, default=REPO_ROOT / "model_store")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=50, help="forward passes per measurement")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    results = measure(store_models(ModelStore(args.store)), args.rounds, args.repeats)
    for key, row in results.items():
        logger.info("%-12s %s", key, {name: round(value, 3) for name, value in row.items()})
    args.out.write_text(
        json.dumps({"machine": f"{platform.machine()}, cpu", "torch_threads": 1, "models": results}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
