"""Metrics from logits, temperature fitting and ensemble weight fitting, on inputs with known answers."""

from __future__ import annotations

import pytest
import torch

from contract.ensemble import calibrated_log_probs
from training.metrics import (
    classification_metrics,
    confusion_matrix,
    expected_calibration_error,
    fit_ensemble_weights,
    fit_temperature,
    metrics_from_probs,
    reliability_bins,
)


def _one_hot_logits(predictions: list[int], scale: float = 20.0) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(predictions), 10).float() * scale


def test_confusion_matrix_rows_are_true_classes() -> None:
    matrix = confusion_matrix(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]))
    assert matrix[2, 1] == 1 and matrix[2, 2] == 1 and matrix[1, 1] == 1 and matrix.sum() == 4


def test_classification_metrics_on_known_predictions() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    metrics = classification_metrics(_one_hot_logits([0, 1, 1, 1]), labels)
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["per_class"]["0"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3})
    assert metrics["per_class"]["1"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8})
    assert metrics["confusion_matrix"][0][:2] == [1, 1]
    assert metrics["samples"] == 4


def test_expected_calibration_error_of_confident_right_and_wrong_answers() -> None:
    probs = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert expected_calibration_error(probs, torch.tensor([0, 0])) == pytest.approx(0.0)
    assert expected_calibration_error(probs, torch.tensor([0, 1])) == pytest.approx(0.5)


def test_log_loss_is_the_mean_negative_log_probability_of_the_truth() -> None:
    probs = torch.tensor([[0.5, 0.5], [0.25, 0.75]])
    metrics = metrics_from_probs(probs, torch.tensor([0, 1]))
    assert metrics["log_loss"] == pytest.approx(-(torch.log(torch.tensor(0.5)) + torch.log(torch.tensor(0.75))) / 2)


def test_fit_temperature_undoes_a_known_overconfidence() -> None:
    generator = torch.Generator().manual_seed(0)
    calibrated = torch.randn(20_000, 10, generator=generator) * 2
    labels = torch.multinomial(torch.softmax(calibrated, dim=1), 1, generator=generator).flatten()
    assert fit_temperature(calibrated * 3, labels) == pytest.approx(3.0, rel=0.05)


def test_ensemble_weights_favour_the_accurate_model() -> None:
    labels = torch.arange(100) % 10
    accurate = calibrated_log_probs(_one_hot_logits(labels.tolist(), scale=3.0), 1.0)
    noisy = calibrated_log_probs(torch.randn(100, 10, generator=torch.Generator().manual_seed(0)) * 5, 1.0)
    weights = fit_ensemble_weights([noisy, accurate], labels)
    assert weights[1] > weights[0]
    assert sum(weights) == pytest.approx(1.0)


def test_a_single_model_gets_the_whole_weight() -> None:
    assert fit_ensemble_weights([torch.zeros(3, 10)], torch.zeros(3, dtype=torch.long)) == [1.0]


def test_reliability_bins_match_a_row_by_row_count_and_weigh_into_the_ece() -> None:
    generator = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(500, 10, generator=generator), dim=1)
    labels = torch.randint(0, 10, (500,), generator=generator)
    rows: list[list[tuple[float, bool]]] = [[] for _ in range(15)]
    for row, label in zip(probs.tolist(), labels.tolist(), strict=True):
        confidence = max(row)
        rows[min(int(confidence * 15), 14)].append((confidence, row.index(confidence) == label))
    bins = reliability_bins(probs, labels)
    assert [b.count for b in bins] == [len(members) for members in rows]
    for b, members in zip(bins, rows, strict=True):
        if members:
            assert b.confidence == pytest.approx(sum(c for c, _ in members) / len(members))
            assert b.accuracy == pytest.approx(sum(hit for _, hit in members) / len(members))
    gap = sum(abs(sum(c - hit for c, hit in members)) for members in rows) / 500
    assert expected_calibration_error(probs, labels) == pytest.approx(gap, abs=1e-9)
