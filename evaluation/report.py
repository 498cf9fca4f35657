"""Renders a :class:`evaluation.run.Comparison` as ``comparison.md`` and its PNG figures.

Everything here depends on the comparison alone, so the same comparison always gives the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: the report is generated on headless machines

import matplotlib.pyplot as plt
import torch

from evaluation.corruptions import SWEEPS
from evaluation.results import (
    ENSEMBLE,
    THROUGHPUT_BATCH,
    Column,
    Comparison,
    Speed,
    wilson_interval,
)
from training.metrics import ECE_BINS
from training.report import DPI, pct

REPORT_FILE = "comparison.md"
RELIABILITY_PNG = "reliability.png"
ROBUSTNESS_PNG = "robustness.png"
TOP_CONFUSIONS = 5
# PNG text chunks matplotlib would add (its version): dropped so a rerun writes identical bytes.
_PNG_METADATA: dict[str, str | None] = {"Software": None}


# -- figures ---------------------------------------------------------------------------------------------------------


def save_png(figure: Any, path: Path) -> None:
    """``figure`` as a PNG at the reports' resolution, without the version chunk (reruns write identical bytes)."""
    figure.savefig(path, format="png", dpi=DPI, metadata=_PNG_METADATA)
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


def _plot_usps(axes: Any, comparison: Comparison) -> None:
    columns = comparison.columns
    total = max(comparison.usps_images, 1)
    accuracy = [100 * c.usps_correct / total for c in columns]
    intervals = [wilson_interval(c.usps_correct, total) for c in columns]
    errors = [[a - 100 * low for a, (low, _) in zip(accuracy, intervals, strict=True)],
              [100 * high - a for a, (_, high) in zip(accuracy, intervals, strict=True)]]  # fmt: skip
    colours = [f"C{i}" for i in range(len(columns) - 1)] + ["black"]
    axes.bar([c.name for c in columns], accuracy, yerr=errors, capsize=4, color=colours)
    for position, value in enumerate(accuracy):
        axes.annotate(f"{value:.1f}", (position, value), xytext=(8, 2), textcoords="offset points", fontsize=8)
    # The differences are a few points: start the axis near the lowest interval so they stay visible.
    axes.set_ylim(max(0.0, math.floor(min(100 * low for low, _ in intervals) - 2)), 100)
    axes.set_title("USPS digits through the service's preprocessing (95 % CI)", fontsize=10)
    axes.set_ylabel("accuracy (%)")


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
    save_png(figure, path)


def plot_robustness(comparison: Comparison, out_dir: Path) -> list[str]:
    """One PNG per sweep, and an overview grid of all sweeps plus USPS accuracy; returns the file names."""
    names = []
    for index, sweep in enumerate(SWEEPS):
        figure, axes = plt.subplots(figsize=(5, 3.6))
        _plot_sweep(axes, comparison, index)
        axes.legend(fontsize=8)
        figure.tight_layout()
        names.append(f"robustness_{sweep.name}.png")
        save_png(figure, out_dir / names[-1])
    figure, grid = plt.subplots(2, math.ceil((len(SWEEPS) + 1) / 2), figsize=(20, 7.5))
    cells = list(grid.flat)
    for index, axes in enumerate(cells[: len(SWEEPS)]):
        _plot_sweep(axes, comparison, index)
    _plot_usps(cells[len(SWEEPS)], comparison)
    for axes in cells[len(SWEEPS) + 1 :]:
        axes.set_visible(False)
    cells[0].legend(fontsize=8, loc="lower left")
    figure.suptitle(f"Robustness on {comparison.robustness_images} MNIST test images (seed {comparison.seed})")
    figure.tight_layout()
    save_png(figure, out_dir / ROBUSTNESS_PNG)
    return names


# -- markdown --------------------------------------------------------------------------------------------------------


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


def _with_interval(successes: int, total: int) -> str:
    low, high = wilson_interval(successes, total)
    return f"{pct(successes / max(total, 1))} [{100 * low:.2f}, {100 * high:.2f}]"


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
        row("macro precision", lambda c: pct(c.test["macro_precision"])),
        row("macro recall", lambda c: pct(c.test["macro_recall"])),
        row("macro F1", lambda c: pct(c.test["macro_f1"])),
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
        "(positive) with a 3x3 window; half steps blend two whole steps. Noise is clipped to [0, 1], and is also "
        "shown after the service's whole preprocessing (each image sent as a PNG through `prepare_digit`, whose "
        "background removal drops faint noise; images it refuses count as errors).",
        "",
        f"![robustness]({ROBUSTNESS_PNG})",
        "",
    ]
    for sweep, figure_name in zip(SWEEPS, figure_names, strict=True):
        rows = [
            [f"{level:g}", *(pct(c.robustness[sweep.name][i]) for c in comparison.columns)]
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
        ["all single models agree", f"{agreement.all_agree} ({pct(agreement.all_agree / agreement.samples)})",
         f"{pct(agreement.accuracy_when_agree)} (the shared answer)"],
        ["they disagree", f"{disagree} ({pct(disagree / agreement.samples)})",
         ", ".join(f"{name} {pct(agreement.accuracy_when_disagree[name])}" for name in columns)],
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
        [str(digit), *(pct(c.test["per_class"][str(digit)]["f1"]) for c in columns)]
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
        "Generated by `python -m evaluation`; rerun it after publishing new versions. Every number except "
        f"the timings is deterministic (seed {comparison.seed}).",
        "",
        f"- MNIST: the official test set, {comparison.test_images} images, never used for training or model "
        "selection. Probabilities are calibrated with each manifest's temperature, as the service serves them.",
        f"- USPS: {comparison.usps_images} test digits from another population of writers, each rendered as an 8-bit "
        "16x16 PNG edge to edge, as the data set stores it, and sent through the service's `prepare_digit`; "
        f"{comparison.usps_refused} refused by it count as errors.",
        "- Ensemble: the service's rule (`contract.ensemble`): weighted geometric mean of the calibrated "
        "probabilities, with each manifest's `ensemble_weight`.",
        f"- Timings: {comparison.cpu_name}, {comparison.timing_threads} torch thread(s) (the service runs one per "
        f"worker by default, `DIGITS_TORCH_THREADS`), torch {torch.__version__}, the graph the service runs "
        f"(frozen and optimised for inference); median of {comparison.latency_runs} batch-1 and "
        f"{comparison.throughput_runs} batch-{THROUGHPUT_BATCH} runs after warm-up, in rounds that visit every "
        "model in turn; the ensemble runs every model, then combines. Load average "
        f"{comparison.load_average:.1f} when timed (other work on the machine slows them). CUDA: {cuda}.",
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
            _header(comparison),
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
