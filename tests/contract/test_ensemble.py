"""The calibration and ensemble rule shared by the trainer, the report and the service."""

from __future__ import annotations

import math

import pytest
import torch

from contract.ensemble import calibrated_log_probs, ensemble_probs


def test_temperature_softens_without_changing_the_argmax() -> None:
    logits = torch.tensor([[4.0, 1.0, 0.0]])
    sharp = calibrated_log_probs(logits, 1.0).exp()
    soft = calibrated_log_probs(logits, 2.0).exp()
    assert soft.argmax() == sharp.argmax() == 0
    assert soft[0, 0] < sharp[0, 0]
    assert soft.sum().item() == pytest.approx(1.0)


def test_ensemble_is_the_normalised_weighted_geometric_mean() -> None:
    a = torch.log(torch.tensor([[0.9, 0.1]]))
    b = torch.log(torch.tensor([[0.4, 0.6]]))
    probs = ensemble_probs([a, b], [3.0, 1.0])
    expected_unnormalised = [0.9**0.75 * 0.4**0.25, 0.1**0.75 * 0.6**0.25]
    total = sum(expected_unnormalised)
    assert probs[0].tolist() == pytest.approx([v / total for v in expected_unnormalised])
    assert math.isclose(probs.sum().item(), 1.0, rel_tol=1e-6)


def test_zero_weights_fall_back_to_equal_weights() -> None:
    a = torch.log(torch.tensor([[0.9, 0.1]]))
    b = torch.log(torch.tensor([[0.1, 0.9]]))
    assert ensemble_probs([a, b], [0.0, 0.0])[0].tolist() == pytest.approx([0.5, 0.5])


def test_ensemble_needs_one_weight_per_model() -> None:
    with pytest.raises(ValueError, match="one weight per model"):
        ensemble_probs([torch.zeros(1, 2)], [1.0, 1.0])
