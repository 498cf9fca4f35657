"""The per-version training report: ``report.md`` plus PNG plots, returned as files to publish beside the model."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # render to files only: training runs on headless machines

import matplotlib.pyplot as plt

REPORT_FILE = "report.md"
CONFUSION_PNG = "confusion_matrix.png"
CURVES_PNG = "learning_curves.png"
DPI = 100


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def confusion_png(matrix: Sequence[Sequence[int]], title: str) -> bytes:
    """Heat map of a confusion matrix (log colour scale, so the few errors stay visible beside the diagonal)."""
    from matplotlib.colors import LogNorm

    figure, axes = plt.subplots(figsize=(6, 5))
    counts = [[max(value, 0) for value in row] for row in matrix]
    image = axes.imshow([[value + 1 for value in row] for row in counts], cmap="Blues", norm=LogNorm())
    for i, row in enumerate(counts):
        for j, value in enumerate(row):
            if value:
                colour = "white" if i == j else "black"
                axes.text(j, i, str(value), ha="center", va="center", fontsize=7, color=colour)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_xticks(range(len(counts)))
    axes.set_yticks(range(len(counts)))
    axes.set_title(title)
    figure.colorbar(image, ax=axes, label="count + 1")
    return _png(figure)


def curves_png(history: Sequence[Mapping[str, float]], title: str) -> bytes:
    """Training and validation loss and accuracy per epoch."""
    epochs = [record["epoch"] for record in history]
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(10, 4))
    loss_axes.plot(epochs, [r["train_loss"] for r in history], marker="o", label="train")
    loss_axes.plot(epochs, [r["val_loss"] for r in history], marker="o", label="validation")
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("cross-entropy")
    loss_axes.legend()
    accuracy_axes.plot(epochs, [100 * r["train_accuracy"] for r in history], marker="o", label="train (augmented)")
    accuracy_axes.plot(epochs, [100 * r["val_accuracy"] for r in history], marker="o", label="validation")
    accuracy_axes.set_xlabel("epoch")
    accuracy_axes.set_ylabel("accuracy (%)")
    accuracy_axes.legend()
    figure.suptitle(title)
    return _png(figure)


def pct(value: float) -> str:
    """A fraction as a percentage with two decimals, as every report prints it."""
    return f"{100 * value:.2f} %"


def render_report(
    name: str,
    *,
    test_metrics: Mapping[str, Any],
    raw_test_metrics: Mapping[str, Any],
    history: Sequence[Mapping[str, float]],
    training_config: Mapping[str, Any],
    parameters: int,
    temperature: float,
    ensemble: Mapping[str, Any] | None,
    train_seconds: float,
) -> dict[str, bytes]:
    """``report.md`` and its two PNGs for one trained model, keyed by file name."""
    protocol = training_config.get("protocol", "standard")
    lines = [
        f"# {name}",
        "",
        f"MNIST digit classifier, `{protocol}` protocol, {test_metrics['samples']} test images.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| parameters | {parameters:,} |",
        f"| test accuracy | {pct(test_metrics['accuracy'])} |",
        f"| macro precision / recall / F1 | {pct(test_metrics['macro_precision'])} / "
        f"{pct(test_metrics['macro_recall'])} / {pct(test_metrics['macro_f1'])} |",
        f"| log loss (raw / calibrated) | {raw_test_metrics['log_loss']:.4f} / {test_metrics['log_loss']:.4f} |",
        f"| ECE (raw / calibrated) | {raw_test_metrics['ece']:.4f} / {test_metrics['ece']:.4f} |",
        f"| temperature (fitted on validation) | {temperature:.3f} |",
        f"| training time | {train_seconds:.0f} s |",
        "",
    ]
    if ensemble:
        weights = ", ".join(f"{member} {weight:.2f}" for member, weight in ensemble["weights"].items())
        lines += [
            "## Ensemble",
            "",
            f"Weights fitted on the validation split: {weights}. "
            f"Test accuracy {pct(ensemble['accuracy'])}, macro F1 {pct(ensemble['macro_f1'])}, "
            f"ECE {ensemble['ece']:.4f}.",
            "",
        ]
        if ensemble.get("note"):
            lines += [str(ensemble["note"]), ""]
    lines += ["## Per class", "", "| digit | precision | recall | F1 |", "|---|---|---|---|"]
    for digit, scores in test_metrics["per_class"].items():
        lines.append(f"| {digit} | {pct(scores['precision'])} | {pct(scores['recall'])} | {pct(scores['f1'])} |")
    lines += [
        "",
        f"![confusion matrix]({CONFUSION_PNG})",
        "",
        "## Learning curves",
        "",
        f"![learning curves]({CURVES_PNG})",
        "",
        "| epoch | train loss | val loss | val accuracy | seconds | images/s |",
        "|---|---|---|---|---|---|",
    ]
    for r in history:
        lines.append(
            f"| {r['epoch']:.0f} | {r['train_loss']:.4f} | {r['val_loss']:.4f} | {pct(r['val_accuracy'])} "
            f"| {r['seconds']:.1f} | {r['images_per_second']:.0f} |"
        )
    lines += ["", "## Training configuration", "", "```json", json.dumps(training_config, indent=2), "```", ""]
    return {
        REPORT_FILE: "\n".join(lines).encode(),
        CONFUSION_PNG: confusion_png(test_metrics["confusion_matrix"], f"{name}: test confusion matrix"),
        CURVES_PNG: curves_png(history, f"{name}: learning curves"),
    }
