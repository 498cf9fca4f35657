"""The batch function: calibrated probabilities, the ensemble, per-request model subsets and model snapshots."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from contract import ModelStore
from contract.ensemble import calibrated_log_probs, ensemble_probs
from service.inference import BatchPredictor, DigitRequest
from service.registry import LoadedModel, ModelSet, load_model
from service.telemetry import Telemetry
from tests.support.stand_ins import ENSEMBLE_WEIGHTS, FIXED_LOGITS, TEMPERATURES, FixedLogits, publish

CPU = torch.device("cpu")


class FirstPixels(nn.Module):
    """Logits are the first ten pixels, so each request's answer depends on its own image only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :10] * 10.0


def image_for(label: int) -> torch.Tensor:
    image = torch.zeros(1, 28, 28)
    image[0, 0, label] = 1.0
    return image


def loaded(store: ModelStore, name: str, version: int = 1) -> LoadedModel:
    return load_model(store, name, version, CPU)


def expected_probs(name: str) -> torch.Tensor:
    return calibrated_log_probs(torch.tensor([FIXED_LOGITS[name]]), TEMPERATURES[name]).exp()[0]


def test_each_model_gives_calibrated_probabilities_and_the_ensemble_combines_them(store: ModelStore) -> None:
    models = ModelSet({name: loaded(store, name) for name in ("mlp", "cnn")})
    predictor = BatchPredictor(CPU, max_batch_size=4)

    (prediction,) = predictor([DigitRequest(image_for(0), models, ("mlp", "cnn"))])

    assert [output.name for output in prediction.outputs] == ["mlp", "cnn"]
    for output in prediction.outputs:
        assert output.result.probabilities == pytest.approx(expected_probs(output.name).tolist(), abs=1e-6)
        assert output.result.label == int(expected_probs(output.name).argmax())
    log_probs = [expected_probs(name).log()[None] for name in ("mlp", "cnn")]
    ensemble = ensemble_probs(log_probs, [ENSEMBLE_WEIGHTS["mlp"], ENSEMBLE_WEIGHTS["cnn"]])[0]
    assert prediction.ensemble.probabilities == pytest.approx(ensemble.tolist(), abs=1e-6)
    assert prediction.ensemble.confidence == pytest.approx(float(ensemble.max()), abs=1e-6)
    assert prediction.batch_size == 1


def test_requests_selecting_different_models_share_the_batch_and_keep_their_own_rows(store: ModelStore) -> None:
    publish(store, "mlp", FirstPixels())
    publish(store, "cnn", FirstPixels())
    models = ModelSet({"mlp": loaded(store, "mlp", 2), "cnn": loaded(store, "cnn", 2)})
    telemetry = Telemetry()
    predictor = BatchPredictor(CPU, max_batch_size=8, telemetry=telemetry)
    selections = [("mlp",), ("cnn", "mlp"), ("cnn",), ("mlp",)]

    predictions = predictor(
        [DigitRequest(image_for(label), models, selected) for label, selected in enumerate(selections)]
    )

    for label, (selected, prediction) in enumerate(zip(selections, predictions, strict=True)):
        assert tuple(output.name for output in prediction.outputs) == selected
        assert {output.result.label for output in prediction.outputs} == {label}
        assert prediction.ensemble.label == label
        assert prediction.batch_size == 4
    # One forward pass per model per batch, and one batch observed.
    for name in ("mlp", "cnn"):
        assert telemetry.registry.get_sample_value("digits_inference_seconds_count", {"model": name}) == 1
    assert telemetry.registry.get_sample_value("digits_batch_size_sum") == 4


def test_requests_from_before_and_after_a_swap_keep_their_own_versions(store: ModelStore) -> None:
    publish(store, "mlp", FixedLogits([0.0, 0.0, 9.0] + [0.0] * 7))
    old = ModelSet({"mlp": loaded(store, "mlp", 1)})
    new = ModelSet({"mlp": loaded(store, "mlp", 2)})
    predictor = BatchPredictor(CPU, max_batch_size=4)

    predictions = predictor([DigitRequest(image_for(0), snapshot, ("mlp",)) for snapshot in (old, new, old)])

    assert [(p.outputs[0].version, p.outputs[0].result.label) for p in predictions] == [(1, 7), (2, 2), (1, 7)]
