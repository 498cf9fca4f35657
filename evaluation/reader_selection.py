"""Line reader versions compared on a fresh draw of validation lines, to choose which one to publish.

A training run keeps the checkpoint that reads its own 1,000 validation lines best, so the validation figure in its
manifest is the best of several and reads high; comparing two versions by those figures favours the newer one.
This script composes a fresh draw (``--seed``, never used by a training run) from the same held-out training
digits (the newest version's ``seed`` and ``validation_size``: no MNIST test digit takes part) and reads it with
every version asked for, through the registry's loader as the service loads them. It reports exact match and
digit accuracy, touching and apart lines, and for each version against the newest, the lines only one of the two
reads exactly and McNemar's exact p-value. ``python -m evaluation.reader_selection --versions 5 6`` writes
``reports/training/reader_selection.json``.
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
from evaluation.holdout import held_out
from evaluation.results import mcnemar_exact
from service.registry import LoadedModel, load_model
from training.config import ReaderConfig
from training.data import Subset, default_data_dir, load_mnist
from training.reading import Line, LineSource, batch_strips, decode_all, reading_metrics
from training.synthetic_lines import LineVariation

logger = logging.getLogger(__name__)

DEFAULT_OUT = Path("reports/training/reader_selection.json")
# Training runs draw their validation lines with seed 1; this draw must differ from it.
DEFAULT_SEED = 3
_BATCH_LINES = 64


def fresh_lines(store: ModelStore, reader: str, version: int, count: int, seed: int, data_dir: Path) -> list[Line]:
    """``count`` lines composed from the digits ``version`` of ``reader`` held out of its training."""
    pool = Subset(*load_mnist(data_dir, "train"))
    held = held_out(store, reader, version, pool)
    return LineSource(pool.take(held), LineVariation(), ReaderConfig()).lines(count, seed)


def read_lines(model: LoadedModel, lines: Sequence[Line]) -> list[str]:
    """What ``model`` reads on each line (greedy decoding; the temperature does not change the best path)."""
    texts = []
    with torch.inference_mode():
        for start in range(0, len(lines), _BATCH_LINES):
            batch, frames = batch_strips([line.pixels for line in lines[start : start + _BATCH_LINES]],
                                         model.manifest.frame_pixels)  # fmt: skip
            logits = model(batch)
            texts += [line.text for line in decode_all([logits[row, : int(n)] for row, n in enumerate(frames)])]
    return texts


def compare(lines: Sequence[Line], readings: dict[int, list[str]]) -> dict[str, Any]:
    """Each version's figures, and each older version against the newest, line by line."""
    truth = [line.text for line in lines]
    subsets = {
        "touching": [i for i, line in enumerate(lines) if line.touching],
        "apart": [i for i, line in enumerate(lines) if line.spacings and set(line.spacings) == {"apart"}],
    }
    versions: dict[str, Any] = {}
    for version, read in readings.items():
        versions[str(version)] = {
            **reading_metrics(read, truth),
            **{
                name: reading_metrics([read[i] for i in rows], [truth[i] for i in rows])
                for name, rows in subsets.items()
            },
        }
    newest = max(readings)
    right = {version: [r == t for r, t in zip(read, truth, strict=True)] for version, read in readings.items()}
    against_newest = {}
    for version in sorted(readings):
        if version == newest:
            continue
        only_newest = sum(n and not o for n, o in zip(right[newest], right[version], strict=True))
        only_older = sum(o and not n for n, o in zip(right[newest], right[version], strict=True))
        against_newest[str(version)] = {
            "only_newest_right": only_newest,
            "only_older_right": only_older,
            "mcnemar_p": mcnemar_exact(only_newest, only_older),
        }
    return {"versions": versions, "newest": newest, "against_newest": against_newest}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.reader_selection", description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, default=Path("model_store"))
    parser.add_argument("--reader", default="reader")
    parser.add_argument("--versions", type=int, nargs="+", required=True)
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    store = ModelStore(args.store)
    newest = max(args.versions)
    lines = fresh_lines(store, args.reader, newest, args.lines, args.seed, args.data_dir or default_data_dir())
    device = torch.device("cpu")
    readings = {v: read_lines(load_model(store, args.reader, v, device), lines) for v in sorted(args.versions)}
    result = {"reader": args.reader, "lines": args.lines, "seed": args.seed, **compare(lines, readings)}
    for version, row in result["versions"].items():
        exact = [100 * row["exact_match"], 100 * row["touching"]["exact_match"], 100 * row["apart"]["exact_match"]]
        logger.info("%s v%s: exact %.2f %%, touching %.2f %%, apart %.2f %%", args.reader, version, *exact)
    logger.info("against v%d: %s", newest, result["against_newest"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
