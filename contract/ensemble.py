"""How a manifest's ``temperature`` and ``ensemble_weight`` turn logits into probabilities.

Written once so the trainer's evaluation, the comparison report and the service combine models identically:
each model's logits are divided by its temperature, and the ensemble is the normalised weighted geometric mean
of the calibrated probabilities (a weighted sum of log-probabilities), which lets a confident, accurate model
outvote two uncertain ones where a plain mean of probabilities would not.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def calibrated_log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``(N, C)`` logits to ``(N, C)`` log-probabilities at the fitted temperature."""
    return torch.log_softmax(logits.float() / temperature, dim=1)


def ensemble_probs(log_probs: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Combine per-model ``(N, C)`` log-probabilities into ``(N, C)`` probabilities.

    Weights are normalised over the models given, so any subset of models can be combined; all-zero weights
    fall back to equal weights.
    """
    if not log_probs or len(log_probs) != len(weights):
        raise ValueError("need one weight per model and at least one model")
    total = float(sum(weights))
    norm = [w / total for w in weights] if total > 0 else [1.0 / len(weights)] * len(weights)
    combined = sum((w * lp for w, lp in zip(norm, log_probs, strict=True)), torch.zeros_like(log_probs[0]))
    return torch.softmax(combined, dim=1)
