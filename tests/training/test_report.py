"""The per-version report: markdown with the headline numbers, and two PNG plots."""

from __future__ import annotations

import torch

from training.metrics import classification_metrics
from training.report import CONFUSION_PNG, CURVES_PNG, REPORT_FILE, render_report

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_report_has_markdown_and_both_plots() -> None:
    labels = torch.arange(50) % 10
    logits = torch.nn.functional.one_hot(labels, 10).float() * 5
    logits[0] = torch.zeros(10)
    metrics = classification_metrics(logits, labels)
    history = [
        {"epoch": float(e), "train_loss": 1.0 / e, "train_accuracy": 0.9, "val_loss": 1.2 / e,
         "val_accuracy": 0.95, "seconds": 2.0, "images_per_second": 1000.0}
        for e in (1, 2)
    ]  # fmt: skip
    files = render_report(
        "cnn",
        test_metrics=metrics,
        raw_test_metrics=metrics,
        history=history,
        training_config={"protocol": "standard", "epochs": 2},
        parameters=1234,
        temperature=1.5,
        ensemble={"weights": {"cnn": 0.7, "mlp": 0.3}, "accuracy": 0.99, "macro_f1": 0.99, "ece": 0.01},
        train_seconds=12.0,
    )
    assert set(files) == {REPORT_FILE, CONFUSION_PNG, CURVES_PNG}
    markdown = files[REPORT_FILE].decode()
    assert f"| test accuracy | {100 * metrics['accuracy']:.2f} % |" in markdown
    assert "cnn 0.70, mlp 0.30" in markdown and "1,234" in markdown
    assert files[CONFUSION_PNG].startswith(_PNG_MAGIC) and files[CURVES_PNG].startswith(_PNG_MAGIC)
