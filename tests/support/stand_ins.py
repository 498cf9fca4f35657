"""Scripted stand-in models with fixed answers (no trained weights) and publishing them into a store, so tests know
the exact probabilities the service must return."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from contract import CHECK_OUTPUT_SPEC, NUM_CLASSES, Manifest, ModelCard, ModelStore
from contract.torchscript import to_torchscript

# Each stand-in model answers with fixed logits whatever the image, so tests know the exact probabilities.
FIXED_LOGITS: dict[str, list[float]] = {
    "mlp": [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 4.0, 0.0, 0.0],
    "lenet5": [0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0],
    "cnn": [0.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0],
}
MODEL_NAMES = tuple(FIXED_LOGITS)
TEMPERATURES = {"mlp": 1.0, "lenet5": 2.0, "cnn": 0.5}
ENSEMBLE_WEIGHTS = {"mlp": 1.0, "lenet5": 1.0, "cnn": 2.0}


# A stand-in digit check: "not a digit" is likelier than "several digits", and "one digit" scores
# softmax([1, 0, 2])[0] = 0.245, below CHECK_THRESHOLD, so every image is flagged as not a digit.
CHECK_LOGITS = [1.0, 0.0, 2.0]
CHECK_THRESHOLD = 0.5


class FixedLogits(nn.Module):
    """``(N, 1, 28, 28)`` to the same logits (10 for a digit classifier) for every image."""

    def __init__(self, logits: Sequence[float]) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(list(logits), dtype=torch.float32), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :1] * 0.0 + self.logits


class WrongOutput(nn.Module):
    """Scripts fine but answers 5 classes instead of 10: the registry's warm-up must refuse it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :5]


def stand_in_card(name: str) -> ModelCard:
    """The manifest data a stand-in is published with: its temperature and ensemble weight, placeholder metrics."""
    return ModelCard(
        torch_version=torch.__version__,
        parameters=NUM_CLASSES,
        metrics={"test_accuracy": 0.5},
        training_config={"seed": 0},
        temperature=TEMPERATURES.get(name, 1.0),
        ensemble_weight=ENSEMBLE_WEIGHTS.get(name, 1.0),
    )


def publish(store: ModelStore, name: str, module: nn.Module | None = None) -> Manifest:
    """Publish ``module`` (default: the fixed-logits stand-in for ``name``) as the next version of ``name``."""
    scripted = to_torchscript(module or FixedLogits(FIXED_LOGITS[name]))
    return store.publish(name, scripted, stand_in_card(name))


def publish_check(
    store: ModelStore, name: str = "check", logits: Sequence[float] = CHECK_LOGITS, threshold: float = CHECK_THRESHOLD
) -> Manifest:
    """Publish a fixed-logits digit check (kind ``digit_check``) with ``threshold`` as the next version of ``name``."""
    card = ModelCard(
        torch_version=torch.__version__,
        parameters=len(logits),
        kind="digit_check",
        output=CHECK_OUTPUT_SPEC,
        pass_threshold=threshold,
    )
    return store.publish(name, to_torchscript(FixedLogits(logits)), card)
