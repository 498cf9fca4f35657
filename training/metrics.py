"""Classification metrics from logits, temperature fitting, and fitting the ensemble weights.

Everything here works on ``(N, C)`` logits or log-probabilities plus ``(N,)`` labels, so the trainer, the
comparison report and tests all compute identical numbers.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from contract import NUM_CLASSES
from contract.ensemble import calibrated_log_probs, ensemble_probs

# Fifteen equal-width confidence bins: the usual choice since Guo et al. (2017), "On Calibration of Modern NNs".
ECE_BINS = 15
# Ensemble weights are searched on a simplex grid of this step: fine enough to matter, coarse enough not to
# overfit the 5,000 validation images.
WEIGHT_GRID_STEP = 0.1
# Temperatures outside this range mean the fit failed rather than that the model is that miscalibrated.
_TEMPERATURE_RANGE = (0.05, 20.0)


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """``(C, C)`` counts, rows are true classes, columns predicted classes."""
    flat = labels * num_classes + predictions
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


@dataclass(frozen=True)
class ReliabilityBin:
    """One equal-width confidence bin: the rows whose top probability fell in ``[lower, upper)``."""

    lower: float
    upper: float
    count: int
    confidence: float
    accuracy: float


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> list[ReliabilityBin]:
    """The bins of a reliability diagram; :func:`expected_calibration_error` is their weighted gap."""
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


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """Mean |confidence - accuracy| over equal-width confidence bins, weighted by bin size."""
    gap = sum(b.count * abs(b.confidence - b.accuracy) for b in reliability_bins(probs, labels, bins))
    return gap / max(len(labels), 1)


def metrics_from_probs(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Accuracy, per-class and macro precision/recall/F1, confusion matrix, log loss and ECE."""
    predictions = probs.argmax(dim=1)
    matrix = confusion_matrix(predictions, labels).double()
    true_positive = matrix.diag()
    precision = true_positive / matrix.sum(dim=0).clamp_min(1)
    recall = true_positive / matrix.sum(dim=1).clamp_min(1)
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    picked = probs.gather(1, labels.view(-1, 1)).clamp_min(1e-12)
    return {
        "samples": len(labels),
        "accuracy": float((predictions == labels).double().mean()),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "log_loss": float(-picked.log().mean()),
        "ece": expected_calibration_error(probs, labels),
        "per_class": {
            str(digit): {"precision": float(p), "recall": float(r), "f1": float(f)}
            for digit, (p, r, f) in enumerate(zip(precision, recall, f1, strict=True))
        },
        "confusion_matrix": matrix.long().tolist(),
    }


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> dict[str, Any]:
    """:func:`metrics_from_probs` of ``logits`` at ``temperature`` (through the service's own calibration)."""
    return metrics_from_probs(calibrated_log_probs(logits, temperature).exp(), labels)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature minimising the negative log-likelihood of ``labels`` (Guo et al. 2017)."""
    logits = logits.detach().double()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    low, high = _TEMPERATURE_RANGE
    return float(min(max(log_t.exp().item(), low), high))


def _simplex_grid(members: int, step: float) -> list[tuple[float, ...]]:
    ticks = round(1 / step)
    return [
        tuple(c / ticks for c in combo)
        for combo in itertools.product(range(ticks + 1), repeat=members)
        if sum(combo) == ticks
    ]


def fit_ensemble_weights(log_probs: Sequence[torch.Tensor], labels: torch.Tensor) -> list[float]:
    """Weights on a simplex grid that maximise validation accuracy, ties broken by lower log loss.

    Accuracy is the target the ensemble must beat the single models on; the log-loss tie-break picks the
    smoothest of the equally accurate mixtures instead of an arbitrary corner.
    """
    if len(log_probs) == 1:
        return [1.0]
    best: tuple[float, float] | None = None
    best_weights: list[float] = []
    for weights in _simplex_grid(len(log_probs), WEIGHT_GRID_STEP):
        probs = ensemble_probs(log_probs, weights)
        accuracy = float((probs.argmax(dim=1) == labels).double().mean())
        loss = float(-probs.gather(1, labels.view(-1, 1)).clamp_min(1e-12).log().mean())
        key = (-accuracy, loss)
        if best is None or key < best:
            best, best_weights = key, list(weights)
    return best_weights
