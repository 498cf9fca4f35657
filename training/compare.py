"""The model comparison report: every model in the store and their ensemble, measured side by side.

``python -m training.compare`` loads the chosen versions through the service's own loader, evaluates them on the
MNIST test set, under the corruptions of :mod:`training.robustness` and on USPS digits sent through the service's
preprocessing, times them, and writes ``comparison.md`` plus PNG figures. All but the timings is deterministic.
"""

from __future__ import annotations

import argparse
import gzip
import io
import logging
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: the report is generated on headless machines

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from modelstore import IMAGE_SIZE, Manifest, ModelStore, StoreError
from modelstore.ensemble import calibrated_log_probs, ensemble_probs
from service.errors import ServiceError
from service.preprocessing import DecodeLimits, prepare_digit
from service.registry import LoadedModel, load_model
from training.data import DATA_DIR_ENV, DataError, balanced_subset, default_data_dir, load_mnist
from training.export import load_torchscript
from training.metrics import ECE_BINS, metrics_from_probs
from training.models import MODELS
from training.robustness import SWEEPS, Sweep
from training.train import DEFAULT_STORE, to_inputs

logger = logging.getLogger(__name__)

DEFAULT_OUT = Path("reports")
REPORT_FILE = "comparison.md"
RELIABILITY_PNG = "reliability.png"
ROBUSTNESS_PNG = "robustness.png"
ENSEMBLE = "ensemble"
# USPS test digits (Hull 1994, as distributed with Hastie et al., "The Elements of Statistical Learning").
DEFAULT_USPS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "usps" / "zip.test.gz"
USPS_SIDE_PIXELS = 16
# USPS digits fill their frame edge to edge; a scan or upload has paper around the digit, so the renderer adds it.
USPS_MARGIN_PIXELS = 4
_USPS_LIMITS = DecodeLimits(max_image_pixels=(USPS_SIDE_PIXELS + 2 * USPS_MARGIN_PIXELS) ** 2)

# The two-sided 95 % quantile of the standard normal distribution.
Z_95 = 1.959963984540054
# 2,000 class-balanced images keep the 54 corrupted copies to about a minute of CPU time; the 95 % interval of an
# accuracy near 99 % measured on them is about +-0.5 points.
ROBUSTNESS_IMAGES = 2000
TOP_CONFUSIONS = 5
THROUGHPUT_BATCH = 64
# Batch-1 latency is a fraction of a millisecond to a few: 200 repetitions give a stable median in under a second.
LATENCY_RUNS = 200
THROUGHPUT_RUNS = 30
_WARMUP_RUNS = 10
# Inference batch for the evaluation passes: large enough to amortise overhead, small enough for any CPU cache.
_EVAL_BATCH = 1000
_DPI = 100
# PNG text chunks matplotlib would add (its version): dropped so a rerun writes identical bytes.
_PNG_METADATA: dict[str, str | None] = {"Software": None}


# -- statistics --------------------------------------------------------------------------------------------------


def wilson_interval(successes: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927); well-behaved near 0 and 1, unlike Wald's."""
    if total <= 0:
        return 0.0, 1.0
    p = successes / total
    denominator = 1 + z**2 / total
    centre = (p + z**2 / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z**2 / (4 * total**2)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (a binomial test of b against b + c at 1/2)."""
    n = only_first + only_second
    if n == 0:
        return 1.0
    tail = math.fsum(math.comb(n, k) for k in range(min(only_first, only_second) + 1)) / math.ldexp(1.0, n)
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class ReliabilityBin:
    """One confidence bin of a reliability diagram."""

    lower: float
    upper: float
    count: int
    confidence: float
    accuracy: float


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> list[ReliabilityBin]:
    """Equal-width confidence bins, binned exactly as :func:`training.metrics.expected_calibration_error` does."""
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).double()
    index = torch.clamp((confidence * bins).long(), max=bins - 1)
    count = torch.bincount(index, minlength=bins)
    conf_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, confidence.double())
    hit_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, correct)
    return [
        ReliabilityBin(
            lower=b / bins,
            upper=(b + 1) / bins,
            count=int(count[b]),
            confidence=float(conf_sum[b] / count[b]) if count[b] else 0.0,
            accuracy=float(hit_sum[b] / count[b]) if count[b] else 0.0,
        )
        for b in range(bins)
    ]


def top_confusions(matrix: Sequence[Sequence[int]], limit: int = TOP_CONFUSIONS) -> list[tuple[int, int, int]]:
    """The ``limit`` largest off-diagonal cells as ``(true, predicted, count)``, largest first, zeros left out."""
    cells = [
        (count, true, predicted)
        for true, row in enumerate(matrix)
        for predicted, count in enumerate(row)
        if true != predicted and count > 0
    ]
    cells.sort(key=lambda cell: (-cell[0], cell[1], cell[2]))
    return [(true, predicted, count) for count, true, predicted in cells[:limit]]


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
    """Every model in the store at its pinned (else latest) version, verified and warmed up as the service does."""
    names = _display_order(sorted({*store.model_names(), *pins}))
    if not names:
        raise StoreError(f"no models in the store at {store.root}")
    return [
        load_model(store, name, pins.get(name) or store.resolve(name), device, warmup_batch_sizes=(1, THROUGHPUT_BATCH))
        for name in names
    ]


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
        logits = torch.cat([model.module(chunk) for chunk in torch.split(inputs, _EVAL_BATCH)])
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


@dataclass(frozen=True)
class Speed:
    """Median batch-1 latency and batch-64 throughput on one device."""

    latency_ms: float
    throughput_per_s: float


def _median_seconds(run: Callable[[], object], repeats: int, synchronize: Callable[[], None]) -> float:
    for _ in range(_WARMUP_RUNS):
        run()
    synchronize()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        synchronize()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def measure_speed(
    members: Sequence[LoadedModel], device: torch.device, latency_runs: int, throughput_runs: int
) -> dict[str, Speed]:
    """Per model and for the ensemble (every member in turn, then the combination), on ``device``."""
    synchronize: Callable[[], None] = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    generator = torch.Generator().manual_seed(0)
    single = torch.rand((1, 1, IMAGE_SIZE, IMAGE_SIZE), generator=generator).to(device)
    batch = torch.rand((THROUGHPUT_BATCH, 1, IMAGE_SIZE, IMAGE_SIZE), generator=generator).to(device)

    def run(group: Sequence[LoadedModel], inputs: torch.Tensor) -> Callable[[], object]:
        def forward() -> torch.Tensor:
            log_probs = [calibrated_log_probs(m.module(inputs), m.manifest.temperature) for m in group]
            return log_probs[0] if len(group) == 1 else combine(group, log_probs)

        return forward

    groups = {member.name: [member] for member in members} | {ENSEMBLE: list(members)}
    speeds = {}
    with torch.inference_mode():
        for name, group in groups.items():
            latency = _median_seconds(run(group, single), latency_runs, synchronize)
            per_batch = _median_seconds(run(group, batch), throughput_runs, synchronize)
            speeds[name] = Speed(latency_ms=1000 * latency, throughput_per_s=THROUGHPUT_BATCH / per_batch)
    return speeds


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


def usps_png(image: torch.Tensor) -> bytes:
    """One USPS digit as the 8-bit grey PNG an upload would be, with a background margin around it."""
    framed = np.pad(image.numpy(), USPS_MARGIN_PIXELS)
    buffer = io.BytesIO()
    Image.fromarray(framed).save(buffer, format="PNG")
    return buffer.getvalue()


def prepare_usps(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, 1, 28, 28)`` model inputs from the service's :func:`prepare_digit` and an ``(N,)`` mask of refusals.

    A digit the service refuses (no digit found) gets a blank input and counts as an error.
    """
    inputs = torch.zeros(len(images), 1, IMAGE_SIZE, IMAGE_SIZE)
    refused = torch.zeros(len(images), dtype=torch.bool)
    for index, image in enumerate(images):
        try:
            inputs[index] = prepare_digit(usps_png(image), _USPS_LIMITS).tensor
        except ServiceError:
            refused[index] = True
    return inputs, refused


# -- evaluation ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One column of the report: a model or the ensemble, and everything measured for it."""

    name: str
    parameters: int
    size_bytes: int
    macs: int
    test: dict[str, Any]
    reliability: list[ReliabilityBin]
    predictions: torch.Tensor
    usps_correct: int
    robustness: dict[str, list[float]]
    cpu: Speed
    cuda: Speed | None


@dataclass(frozen=True)
class Agreement:
    """How the single models agree on the test set, and McNemar's test of the ensemble against the best of them."""

    samples: int
    all_agree: int
    accuracy_when_agree: float
    accuracy_when_disagree: dict[str, float]
    best_single: str
    ensemble_only: int
    best_only: int
    p_value: float


@dataclass(frozen=True)
class Comparison:
    """Everything the report shows; :func:`render_markdown` and the figures are pure functions of it."""

    manifests: list[Manifest]
    columns: list[Column]
    agreement: Agreement
    test_images: int
    robustness_images: int
    usps_images: int
    usps_refused: int
    seed: int
    timing_threads: int
    cpu_name: str
    latency_runs: int
    throughput_runs: int
    cuda_device: str | None


def _accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    return float((predictions == labels).double().mean()) if len(labels) else 0.0


def _robustness(
    members: Sequence[LoadedModel], inputs: torch.Tensor, labels: torch.Tensor, sweep: Sweep, seed: int
) -> dict[str, list[float]]:
    curves: dict[str, list[float]] = {name: [] for name in [*(m.name for m in members), ENSEMBLE]}
    for level in sweep.levels:
        # The same seed at every level: each image keeps its direction or noise pattern, only the strength grows.
        corrupted = sweep.corrupt(inputs, level, torch.Generator().manual_seed(seed))
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
    usps_inputs, refused = prepare_usps(usps_images)
    usps_log_probs = [predict_log_probs(member, usps_inputs) for member in members]
    usps_predictions = {m.name: lp.argmax(dim=1) for m, lp in zip(members, usps_log_probs, strict=True)}
    usps_predictions[ENSEMBLE] = combine(members, usps_log_probs).argmax(dim=1)
    logger.info("USPS: %d digits, %d refused by the preprocessing", len(usps_labels), int(refused.sum()))

    subset = balanced_subset(labels, min(options.robustness_images, len(labels)), options.seed)
    curves = [_robustness(members, inputs[subset], labels[subset], sweep, options.seed) for sweep in SWEEPS]

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
        latency_runs=options.latency_runs,
        throughput_runs=options.throughput_runs,
        cuda_device=cuda_name,
    )


# -- figures ---------------------------------------------------------------------------------------------------------


def _save(figure: Any, path: Path) -> None:
    figure.savefig(path, format="png", dpi=_DPI, metadata=_PNG_METADATA)
    plt.close(figure)


def _plot_sweep(axes: Any, comparison: Comparison, index: int) -> None:
    sweep = SWEEPS[index]
    for column in comparison.columns:
        style = {"linewidth": 2.5, "color": "black"} if column.name == ENSEMBLE else {"linewidth": 1.5}
        axes.plot(sweep.levels, [100 * a for a in column.robustness[sweep.name]], marker="o", markersize=3,
                  label=column.name, **style)  # fmt: skip
    axes.set_title(sweep.title, fontsize=10)
    axes.set_xlabel(sweep.unit)
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(0, 100)
    axes.grid(alpha=0.3)


def plot_reliability(comparison: Comparison, path: Path) -> None:
    """Reliability diagrams, one panel per column: accuracy against mean confidence per bin, and bin counts."""
    columns = comparison.columns
    figure, panels = plt.subplots(1, len(columns), figsize=(3.2 * len(columns), 3.6), sharey=True, squeeze=False)
    for axes, column in zip(panels[0], columns, strict=True):
        filled = [b for b in column.reliability if b.count]
        width = 1.0 / len(column.reliability)
        axes.bar([b.lower for b in filled], [b.accuracy for b in filled], width=width, align="edge",
                 edgecolor="black", linewidth=0.5, label="accuracy")  # fmt: skip
        axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
        axes.scatter([b.confidence for b in filled], [b.accuracy for b in filled], color="tab:red", s=10, zorder=3,
                     label="(mean confidence, accuracy)")  # fmt: skip
        for b in filled:
            axes.annotate(str(b.count), (b.lower + width / 2, 0.02), ha="center", fontsize=6, rotation=90)
        axes.set_title(f"{column.name}: ECE {column.test['ece']:.4f}", fontsize=10)
        axes.set_xlabel("confidence")
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1)
    panels[0][0].set_ylabel("accuracy (bin counts at the bottom)")
    panels[0][0].legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    _save(figure, path)


def plot_robustness(comparison: Comparison, out_dir: Path) -> list[str]:
    """One PNG per sweep, and an overview grid of all sweeps plus USPS accuracy; returns the file names."""
    names = []
    for index, sweep in enumerate(SWEEPS):
        figure, axes = plt.subplots(figsize=(5, 3.6))
        _plot_sweep(axes, comparison, index)
        axes.legend(fontsize=8)
        figure.tight_layout()
        names.append(f"robustness_{sweep.name}.png")
        _save(figure, out_dir / names[-1])
    figure, grid = plt.subplots(2, 4, figsize=(16, 7.5))
    cells = list(grid.flat)
    for index, axes in enumerate(cells[: len(SWEEPS)]):
        _plot_sweep(axes, comparison, index)
    usps_axes = cells[len(SWEEPS)]
    columns = comparison.columns
    heights = [100 * c.usps_correct / max(comparison.usps_images, 1) for c in columns]
    usps_axes.bar([c.name for c in columns], heights, color=[f"C{i}" for i in range(len(columns) - 1)] + ["black"])
    for position, height in enumerate(heights):
        usps_axes.annotate(f"{height:.1f}", (position, height + 1), ha="center", fontsize=8)
    usps_axes.set_title("USPS digits through the service's preprocessing", fontsize=10)
    usps_axes.set_ylabel("accuracy (%)")
    usps_axes.set_ylim(0, 100)
    cells[0].legend(fontsize=8, loc="lower left")
    figure.suptitle(f"Robustness on {comparison.robustness_images} MNIST test images (seed {comparison.seed})")
    figure.tight_layout()
    _save(figure, out_dir / ROBUSTNESS_PNG)
    return names


# -- markdown --------------------------------------------------------------------------------------------------------


def _pct(value: float) -> str:
    return f"{100 * value:.2f} %"


def _with_interval(successes: int, total: int) -> str:
    low, high = wilson_interval(successes, total)
    return f"{_pct(successes / max(total, 1))} [{100 * low:.2f}, {100 * high:.2f}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _size(size_bytes: int) -> str:
    return f"{size_bytes / 1024:,.0f} KiB"


def _speed_rows(device: str, speeds: Sequence[Speed | None]) -> list[list[str]]:
    return [
        [f"{device} latency, batch 1 (median)", *(f"{s.latency_ms:.2f} ms" if s else "-" for s in speeds)],
        [
            f"{device} throughput, batch {THROUGHPUT_BATCH} (median)",
            *(f"{s.throughput_per_s:,.0f} images/s" if s else "-" for s in speeds),
        ],
    ]


def summary_rows(comparison: Comparison) -> list[list[str]]:
    """The side-by-side table: one row per measurement, one column per model and the ensemble."""
    columns = comparison.columns
    n = comparison.test_images

    def row(title: str, cell: Callable[[Column], str]) -> list[str]:
        return [title, *(cell(c) for c in columns)]

    rows = [
        row("MNIST test accuracy [95 % CI]", lambda c: _with_interval(round(c.test["accuracy"] * n), n)),
        row("macro precision", lambda c: _pct(c.test["macro_precision"])),
        row("macro recall", lambda c: _pct(c.test["macro_recall"])),
        row("macro F1", lambda c: _pct(c.test["macro_f1"])),
        row("errors", lambda c: f"{n - round(c.test['accuracy'] * n)} of {n}"),
        row("log loss (calibrated)", lambda c: f"{c.test['log_loss']:.4f}"),
        row(f"ECE ({ECE_BINS} bins, calibrated)", lambda c: f"{c.test['ece']:.4f}"),
        row("USPS accuracy [95 % CI]", lambda c: _with_interval(c.usps_correct, comparison.usps_images)),
        row("parameters", lambda c: f"{c.parameters:,}"),
        row("file size", lambda c: _size(c.size_bytes)),
        row("multiply-accumulates per image", lambda c: f"{c.macs / 1e6:.2f} M"),
    ]
    rows += _speed_rows("CPU", [c.cpu for c in columns])
    if comparison.cuda_device is not None:
        rows += _speed_rows("CUDA", [c.cuda for c in columns])
    return rows


def _header(comparison: Comparison) -> list[str]:
    return ["", *(c.name for c in comparison.columns)]


def _models_section(comparison: Comparison) -> list[str]:
    rows = [
        [
            m.name,
            str(m.version),
            m.created.date().isoformat(),
            f"`{m.sha256[:12]}`",
            f"{m.temperature:.3f}",
            f"{m.ensemble_weight:.2f}",
        ]  # fmt: skip
        for m in comparison.manifests
    ]
    header = ["model", "version", "published", "sha256", "temperature", "ensemble weight"]
    return ["## Models", "", *_table(header, rows), ""]


def _robustness_section(comparison: Comparison, figure_names: Sequence[str]) -> list[str]:
    lines = [
        "## Robustness",
        "",
        f"Accuracy on a fixed, class-balanced subset of {comparison.robustness_images} MNIST test images (seed "
        f"{comparison.seed}) under each corruption; directions, signs and noise are drawn once per image, so only "
        "the strength changes along a curve. Rotation and scaling act about the digit's centre of mass. "
        "Translation moves each digit by whole pixels left, right, up or down, and is shown as the model receives "
        "it and after the service's centring (crop to the ink, centre of mass to the middle), which undoes "
        "everything but ink pushed out of the frame. Stroke width is grey-level erosion (negative) or dilation "
        "(positive) with a 3x3 window. Noise is clipped to [0, 1].",
        "",
        f"![robustness]({ROBUSTNESS_PNG})",
        "",
    ]
    for sweep, figure_name in zip(SWEEPS, figure_names, strict=True):
        rows = [
            [f"{level:g}", *(_pct(c.robustness[sweep.name][i]) for c in comparison.columns)]
            for i, level in enumerate(sweep.levels)
        ]
        lines += [f"### {sweep.title} ([figure]({figure_name}))", ""]
        lines += _table([sweep.unit, *(c.name for c in comparison.columns)], rows) + [""]
    return lines


def _agreement_section(comparison: Comparison) -> list[str]:
    agreement = comparison.agreement
    columns = [c.name for c in comparison.columns]
    disagree = agreement.samples - agreement.all_agree
    rows = [
        ["all single models agree", f"{agreement.all_agree} ({_pct(agreement.all_agree / agreement.samples)})",
         f"{_pct(agreement.accuracy_when_agree)} (the shared answer)"],
        ["they disagree", f"{disagree} ({_pct(disagree / agreement.samples)})",
         ", ".join(f"{name} {_pct(agreement.accuracy_when_disagree[name])}" for name in columns)],
    ]  # fmt: skip
    verdict = "is" if agreement.p_value < 0.05 and agreement.ensemble_only > agreement.best_only else "is not"
    return [
        "## Agreement",
        "",
        *_table(["test images where", "count", "accuracy"], rows),
        "",
        f"Ensemble against the best single model ({agreement.best_single}): the ensemble alone is right on "
        f"{agreement.ensemble_only} images, {agreement.best_single} alone on {agreement.best_only}. McNemar's exact "
        f"test (two-sided binomial on the discordant pairs): p = {agreement.p_value:.3g}; the ensemble {verdict} "
        "significantly better at the 5 % level. (The best model is picked on this same test set, which favours it.)",
        "",
    ]


def render_markdown(comparison: Comparison, figure_names: Sequence[str]) -> str:
    """The report's markdown; figures are referenced by relative file name."""
    columns = comparison.columns
    per_class = [
        [str(digit), *(_pct(c.test["per_class"][str(digit)]["f1"]) for c in columns)]
        for digit in range(len(columns[0].test["per_class"]))
    ]
    confusions = [top_confusions(c.test["confusion_matrix"]) for c in columns]
    confusion_rows = [
        [str(rank + 1), *(f"{p[rank][0]} → {p[rank][1]} ({p[rank][2]})" if rank < len(p) else "" for p in confusions)]
        for rank in range(max((len(p) for p in confusions), default=0))
    ]
    cuda = comparison.cuda_device or "none present when this report was generated"
    lines = [
        "# Model comparison",
        "",
        "Generated by `python -m training.compare`; rerun it after publishing new versions. Every number except "
        f"the timings is deterministic (seed {comparison.seed}).",
        "",
        f"- MNIST: the official test set, {comparison.test_images} images, never used for training or model "
        "selection. Probabilities are calibrated with each manifest's temperature, as the service serves them.",
        f"- USPS: {comparison.usps_images} test digits from another population of writers, each rendered as an 8-bit "
        f"PNG with a {USPS_MARGIN_PIXELS}-pixel margin and sent through the service's `prepare_digit`; "
        f"{comparison.usps_refused} refused by it count as errors.",
        "- Ensemble: the service's rule (`modelstore.ensemble`): weighted geometric mean of the calibrated "
        "probabilities, with each manifest's `ensemble_weight`.",
        f"- Timings: {comparison.cpu_name}, {comparison.timing_threads} torch thread(s) (the service runs one per "
        f"worker by default, `DIGITS_TORCH_THREADS`), torch {torch.__version__}, the graph the service "
        f"runs (frozen and optimised for inference); median of {comparison.latency_runs} batch-1 and "
        f"{comparison.throughput_runs} batch-{THROUGHPUT_BATCH} runs after warm-up; ensemble = every model in turn "
        "plus the combination. "
        f"CUDA: {cuda}.",
        "- Multiply-accumulates: counted by `torch.utils.flop_counter.FlopCounterMode` running the stored "
        "TorchScript graph on one image (convolutions and matrix products; batch norm, activations and pooling "
        "are not counted).",
        "",
        *_models_section(comparison),
        "## Summary",
        "",
        *_table(_header(comparison), summary_rows(comparison)),
        "",
        "## Per-class F1",
        "",
        *_table(["digit", *(c.name for c in columns)], per_class),
        "",
        f"## Most confused pairs (true → predicted (count), top {TOP_CONFUSIONS})",
        "",
        *_table(["rank", *(c.name for c in columns)], confusion_rows),
        "",
        "## Calibration",
        "",
        f"Reliability diagrams on the MNIST test set ({ECE_BINS} equal-width confidence bins; bars are the accuracy "
        "per bin, dots the mean confidence against it, numbers the images per bin).",
        "",
        f"![reliability diagrams]({RELIABILITY_PNG})",
        "",
        *_robustness_section(comparison, figure_names),
        "## USPS",
        "",
        *_table(
            ["", *(c.name for c in columns)],
            [["accuracy [95 % CI]", *(_with_interval(c.usps_correct, comparison.usps_images) for c in columns)]],
        ),
        "",
        *_agreement_section(comparison),
    ]
    return "\n".join(lines)


def write_report(comparison: Comparison, out_dir: Path) -> Path:
    """Write the markdown and its PNGs into ``out_dir``; returns the markdown's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_reliability(comparison, out_dir / RELIABILITY_PNG)
    figure_names = plot_robustness(comparison, out_dir)
    path = out_dir / REPORT_FILE
    path.write_text(render_markdown(comparison, figure_names), encoding="utf-8")
    return path


# -- command line ----------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digits-compare",
        description="Measure every model in the store and their ensemble side by side; write a markdown report.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
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
