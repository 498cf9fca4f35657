"""The model comparison report: every model in the store and their ensemble, measured side by side.

``python -m evaluation`` loads the chosen versions through the service's own loader, evaluates them on the
MNIST test set, under the corruptions of :mod:`evaluation.corruptions` and on USPS digits sent through the service's
preprocessing, and times them; :mod:`evaluation.report` writes the result as ``comparison.md`` plus PNG
figures. All but the timings is deterministic.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from contract import IMAGE_SIZE, ModelStore, StoreError
from contract.ensemble import calibrated_log_probs, ensemble_probs
from contract.torchscript import load_torchscript
from evaluation.corruptions import SWEEPS, Sweep, prepare_like_service
from evaluation.report import write_report
from evaluation.results import (
    ENSEMBLE,
    THROUGHPUT_BATCH,
    Agreement,
    Column,
    Comparison,
    Speed,
    mcnemar_exact,
)
from service.registry import LoadedModel, load_model
from training.data import DATA_DIR_ENV, DataError, balanced_subset, default_data_dir, load_mnist
from training.metrics import metrics_from_probs, reliability_bins
from training.models import MODELS
from training.train import DEFAULT_STORE, to_inputs

logger = logging.getLogger(__name__)

DEFAULT_OUT = Path("reports")
# USPS test digits (Hull 1994, as distributed with Hastie et al., "The Elements of Statistical Learning").
DEFAULT_USPS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "usps" / "zip.test.gz"
USPS_SIDE_PIXELS = 16

# 2,000 class-balanced images keep the 54 corrupted copies to about a minute of CPU time; the 95 % interval of an
# accuracy near 99 % measured on them is about +-0.5 points.
ROBUSTNESS_IMAGES = 2000
# Batch-1 latency is a fraction of a millisecond to a few: 200 repetitions give a stable median in under a second.
LATENCY_RUNS = 200
THROUGHPUT_RUNS = 30
_WARMUP_RUNS = 10
_TIMING_ROUNDS = 5
# Inference batch for the evaluation passes: large enough to amortise overhead, small enough for any CPU cache.
_EVAL_BATCH = 1000


# -- models --------------------------------------------------------------------------------------------------------


def parse_pins(items: Sequence[str]) -> dict[str, int]:
    """``["cnn=2", "mlp=1"]`` to ``{"cnn": 2, "mlp": 1}``; raises ``ValueError`` on anything else."""
    pins: dict[str, int] = {}
    for item in items:
        name, sep, version = item.partition("=")
        if not sep or not name or not version.isdigit() or int(version) < 1:
            raise ValueError(f"expected name=version with a positive version, got {item!r}")
        pins[name] = int(version)
    return pins


def _display_order(names: Sequence[str]) -> list[str]:
    # The architectures' own order (simplest first), then any other model alphabetically.
    known = list(MODELS)
    return sorted(names, key=lambda name: (known.index(name) if name in known else len(known), name))


def load_members(store: ModelStore, pins: Mapping[str, int], device: torch.device) -> list[LoadedModel]:
    """Every digit classifier in the store at its pinned (else latest) version, verified and warmed up as the
    service does; line readers (told apart by their manifest) are measured by :mod:`evaluation.reading`."""
    names = _display_order(sorted({*store.model_names(), *pins}))
    members = [
        load_model(store, name, pins.get(name) or store.resolve(name), device, warmup_batch_sizes=(1, THROUGHPUT_BATCH))
        for name in names
    ]
    classifiers = [member for member in members if member.manifest.kind == "digit_classifier"]
    if not classifiers:
        raise StoreError(f"no digit classifiers in the store at {store.root}")
    return classifiers


def count_macs(model_bytes: bytes) -> int:
    """Multiply-accumulates of one ``(1, 1, 28, 28)`` forward pass of the stored TorchScript graph.

    Counted by :class:`torch.utils.flop_counter.FlopCounterMode` on the graph as stored (convolutions and matrix
    products, 2 FLOPs per MAC); element-wise work such as batch norm, activations and pooling is not counted.
    """
    module = load_torchscript(model_bytes)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        module(torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE))
    return int(counter.get_total_flops()) // 2


def predict_log_probs(model: LoadedModel, inputs: torch.Tensor) -> torch.Tensor:
    """Calibrated ``(N, C)`` log-probabilities (the manifest's temperature) for ``(N, 1, 28, 28)`` inputs."""
    with torch.inference_mode():
        logits = torch.cat([model(chunk) for chunk in torch.split(inputs, _EVAL_BATCH)])
    return calibrated_log_probs(logits, model.manifest.temperature)


def combine(members: Sequence[LoadedModel], log_probs: Sequence[torch.Tensor]) -> torch.Tensor:
    """The ensemble's ``(N, C)`` probabilities, weighted by each manifest's ``ensemble_weight``."""
    return ensemble_probs(log_probs, [member.manifest.ensemble_weight for member in members])


# -- timing --------------------------------------------------------------------------------------------------------


def cpu_name() -> str:
    """The processor's model name and logical CPU count, as timings should be quoted with them."""
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        models = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        name = models[0] if models else name
    return f"{name} ({os.cpu_count()} logical CPUs)"


def run_timings(run: Callable[[], object], repeats: int, synchronize: Callable[[], None]) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``run``, after a warm-up (``synchronize`` waits for the device)."""
    for _ in range(_WARMUP_RUNS):
        run()
    synchronize()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        synchronize()
        seconds.append(time.perf_counter() - started)
    return seconds


def measure_speed(
    members: Sequence[LoadedModel], device: torch.device, latency_runs: int, throughput_runs: int
) -> dict[str, Speed]:
    """Per model and for the ensemble (every member in turn, then the combination), on ``device``.

    The runs are split into rounds that visit every model in turn, so a burst of other work on a shared machine
    slows all of them alike instead of whichever model happened to be measured at the time.
    """
    synchronize: Callable[[], None] = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    generator = torch.Generator().manual_seed(0)
    single = torch.rand((1, 1, IMAGE_SIZE, IMAGE_SIZE), generator=generator).to(device)
    batch = torch.rand((THROUGHPUT_BATCH, 1, IMAGE_SIZE, IMAGE_SIZE), generator=generator).to(device)

    def run(group: Sequence[LoadedModel], inputs: torch.Tensor) -> Callable[[], object]:
        def forward() -> torch.Tensor:
            log_probs = [calibrated_log_probs(m(inputs), m.manifest.temperature) for m in group]
            return log_probs[0] if len(group) == 1 else combine(group, log_probs)

        return forward

    groups = {member.name: [member] for member in members} | {ENSEMBLE: list(members)}
    latency: dict[str, list[float]] = {name: [] for name in groups}
    per_batch: dict[str, list[float]] = {name: [] for name in groups}
    rounds = min(_TIMING_ROUNDS, latency_runs, throughput_runs)
    with torch.inference_mode():
        for _ in range(rounds):
            for name, group in groups.items():
                latency[name] += run_timings(run(group, single), latency_runs // rounds, synchronize)
                per_batch[name] += run_timings(run(group, batch), throughput_runs // rounds, synchronize)
    return {
        name: Speed(
            latency_ms=1000 * statistics.median(latency[name]),
            throughput_per_s=THROUGHPUT_BATCH / statistics.median(per_batch[name]),
        )
        for name in groups
    }


# -- data ------------------------------------------------------------------------------------------------------------


def load_usps(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """USPS digits as uint8 ``(N, 16, 16)`` images (ink bright, as in MNIST) and int64 labels.

    Each line of the file is a label then 256 grey values in [-1, 1], row by row, with ink at 1.
    """
    try:
        with gzip.open(path, "rt") as handle:
            rows = [line.split() for line in handle if line.strip()]
    except (OSError, EOFError) as exc:
        raise DataError(f"{path.name}: cannot read ({exc})") from None
    pixels = USPS_SIDE_PIXELS * USPS_SIDE_PIXELS
    if not rows or any(len(row) != pixels + 1 for row in rows):
        raise DataError(f"{path.name}: expected lines of a label and {pixels} values")
    try:
        values = np.array([[float(v) for v in row] for row in rows], dtype=np.float64)
    except ValueError:
        raise DataError(f"{path.name}: non-numeric value") from None
    labels = values[:, 0].astype(np.int64)
    if (labels != values[:, 0]).any() or labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{path.name}: labels must be the digits 0-9")
    grey = np.rint((values[:, 1:].clip(-1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    return torch.from_numpy(grey.reshape(-1, USPS_SIDE_PIXELS, USPS_SIDE_PIXELS)), torch.from_numpy(labels)


def usps_as_stored(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(N, 16, 16)`` USPS digits to ``(N, 1, 16, 16)`` floats in [0, 1], edge to edge as the data comes."""
    return (images.float() / 255.0).unsqueeze(1)


# -- evaluation ------------------------------------------------------------------------------------------------------


def _accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    return float((predictions == labels).double().mean()) if len(labels) else 0.0


def _robustness(
    members: Sequence[LoadedModel], inputs: torch.Tensor, labels: torch.Tensor, sweep: Sweep, seed: int
) -> dict[str, list[float]]:
    curves: dict[str, list[float]] = {name: [] for name in [*(m.name for m in members), ENSEMBLE]}
    for level in sweep.levels:
        # The same seed at every level: each image keeps its direction or noise pattern, only the strength grows.
        corrupted = sweep.apply(inputs, level, torch.Generator().manual_seed(seed))
        log_probs = [predict_log_probs(member, corrupted) for member in members]
        for member, member_log_probs in zip(members, log_probs, strict=True):
            curves[member.name].append(_accuracy(member_log_probs.argmax(dim=1), labels))
        curves[ENSEMBLE].append(_accuracy(combine(members, log_probs).argmax(dim=1), labels))
    logger.info("robustness: %s done", sweep.name)
    return curves


def _agreement(predictions: Mapping[str, torch.Tensor], labels: torch.Tensor, singles: Sequence[str]) -> Agreement:
    stacked = torch.stack([predictions[name] for name in singles])  # (M, N)
    agree = (stacked == stacked[0]).all(dim=0)
    disagree = ~agree
    accuracy = {name: _accuracy(predictions[name], labels) for name in singles}
    best = max(singles, key=lambda name: accuracy[name])
    ensemble_right = predictions[ENSEMBLE] == labels
    best_right = predictions[best] == labels
    ensemble_only = int((ensemble_right & ~best_right).sum())
    best_only = int((best_right & ~ensemble_right).sum())
    return Agreement(
        samples=len(labels),
        all_agree=int(agree.sum()),
        accuracy_when_agree=_accuracy(stacked[0][agree], labels[agree]),
        accuracy_when_disagree={
            name: _accuracy(predictions[name][disagree], labels[disagree]) for name in [*singles, ENSEMBLE]
        },
        best_single=best,
        ensemble_only=ensemble_only,
        best_only=best_only,
        p_value=mcnemar_exact(ensemble_only, best_only),
    )


@dataclass(frozen=True)
class CompareOptions:
    """What to compare and how much of it: the command line's options."""

    store: ModelStore
    pins: Mapping[str, int]
    data_dir: Path
    usps_path: Path
    limit: int | None
    seed: int
    timing_threads: int
    robustness_images: int = ROBUSTNESS_IMAGES
    latency_runs: int = LATENCY_RUNS
    throughput_runs: int = THROUGHPUT_RUNS


def build_comparison(options: CompareOptions) -> Comparison:
    """Load, evaluate and time every model and the ensemble (see the module docstring)."""
    cpu = torch.device("cpu")
    members = load_members(options.store, options.pins, cpu)
    singles = [member.name for member in members]
    logger.info("comparing %s", ", ".join(f"{m.name} v{m.version}" for m in members))

    images, labels = load_mnist(options.data_dir, "test")
    if options.limit is not None:
        chosen = balanced_subset(labels, options.limit, options.seed)
        images, labels = images[chosen], labels[chosen]
    inputs = to_inputs(images, cpu)
    test_log_probs = [predict_log_probs(member, inputs) for member in members]
    test_probs = {m.name: lp.exp() for m, lp in zip(members, test_log_probs, strict=True)}
    test_probs[ENSEMBLE] = combine(members, test_log_probs)

    usps_images, usps_labels = load_usps(options.usps_path)
    if options.limit is not None:
        chosen = balanced_subset(usps_labels, options.limit, options.seed)
        usps_images, usps_labels = usps_images[chosen], usps_labels[chosen]
    usps_inputs, refused = prepare_like_service(usps_as_stored(usps_images))
    usps_log_probs = [predict_log_probs(member, usps_inputs) for member in members]
    usps_predictions = {m.name: lp.argmax(dim=1) for m, lp in zip(members, usps_log_probs, strict=True)}
    usps_predictions[ENSEMBLE] = combine(members, usps_log_probs).argmax(dim=1)
    logger.info("USPS: %d digits, %d refused by the preprocessing", len(usps_labels), int(refused.sum()))

    subset = balanced_subset(labels, min(options.robustness_images, len(labels)), options.seed)
    curves = [_robustness(members, inputs[subset], labels[subset], sweep, options.seed) for sweep in SWEEPS]

    load_average = os.getloadavg()[0]
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(options.timing_threads)
    try:
        cpu_speed = measure_speed(members, cpu, options.latency_runs, options.throughput_runs)
    finally:
        torch.set_num_threads(previous_threads)
    cuda_speed: dict[str, Speed] = {}
    cuda_name = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    if cuda_name is not None:
        cuda = torch.device("cuda")
        cuda_members = load_members(options.store, {m.name: m.version for m in members}, cuda)
        cuda_speed = measure_speed(cuda_members, cuda, options.latency_runs, options.throughput_runs)

    macs = {m.name: count_macs(options.store.read_verified(m.name, m.version).model_bytes) for m in members}
    costs = {m.name: (m.manifest.parameters, m.manifest.size_bytes, macs[m.name]) for m in members}
    costs[ENSEMBLE] = (
        sum(m.manifest.parameters for m in members),
        sum(m.manifest.size_bytes for m in members),
        sum(macs.values()),
    )
    predictions = {name: probs.argmax(dim=1) for name, probs in test_probs.items()}
    usps_ok = ~refused
    columns = [
        Column(
            name=name,
            parameters=costs[name][0],
            size_bytes=costs[name][1],
            macs=costs[name][2],
            test=metrics_from_probs(probs, labels),
            reliability=reliability_bins(probs, labels),
            predictions=predictions[name],
            usps_correct=int(((usps_predictions[name] == usps_labels) & usps_ok).sum()),
            robustness={sweep.name: curve[name] for sweep, curve in zip(SWEEPS, curves, strict=True)},
            cpu=cpu_speed[name],
            cuda=cuda_speed.get(name),
        )
        for name, probs in test_probs.items()
    ]
    return Comparison(
        manifests=[m.manifest for m in members],
        columns=columns,
        agreement=_agreement(predictions, labels, singles),
        test_images=len(labels),
        robustness_images=len(subset),
        usps_images=len(usps_labels),
        usps_refused=int(refused.sum()),
        seed=options.seed,
        timing_threads=options.timing_threads,
        cpu_name=cpu_name(),
        load_average=load_average,
        latency_runs=options.latency_runs,
        throughput_runs=options.throughput_runs,
        cuda_device=cuda_name,
    )


# -- command line ----------------------------------------------------------------------------------------------------


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The store, pinned versions, MNIST and USPS: what every evaluation reads."""
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, help="model store root")
    parser.add_argument(
        "--versions", nargs="*", default=[], metavar="NAME=VERSION", help="pinned versions (default: latest of each)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"MNIST IDX files (default: ${DATA_DIR_ENV} or ../shared/data/mnist)",
    )
    parser.add_argument("--usps", type=Path, default=DEFAULT_USPS, help="USPS test digits (zip.test.gz)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digits-evaluate",
        description="Measure every model in the store and their ensemble side by side; write a markdown report.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_data_arguments(parser)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for comparison.md and the PNGs")
    parser.add_argument("--limit", type=int, default=None, help="class-balanced cap on the MNIST and USPS images")
    parser.add_argument("--robustness-images", type=int, default=ROBUSTNESS_IMAGES, help="subset for the curves")
    parser.add_argument("--seed", type=int, default=0, help="picks the subsets and the corruptions' random draws")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the CPU timings")
    parser.add_argument("--latency-runs", type=int, default=LATENCY_RUNS, help="timed batch-1 repetitions")
    parser.add_argument("--throughput-runs", type=int, default=THROUGHPUT_RUNS, help="timed batch-64 repetitions")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        pins = parse_pins(args.versions)
    except ValueError as exc:
        parser.error(str(exc))
    for flag in ("limit", "robustness_images", "threads", "latency_runs", "throughput_runs"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = CompareOptions(
        store=ModelStore(args.store),
        pins=pins,
        data_dir=args.data_dir or default_data_dir(),
        usps_path=args.usps,
        limit=args.limit,
        seed=args.seed,
        timing_threads=args.threads,
        robustness_images=args.robustness_images,
        latency_runs=args.latency_runs,
        throughput_runs=args.throughput_runs,
    )
    started = time.perf_counter()
    try:
        comparison = build_comparison(options)
    except (StoreError, DataError) as exc:
        logger.error("%s", exc)
        return 1
    path = write_report(comparison, args.out)
    logger.info("wrote %s in %.0f s", path, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
