"""The line reader's training pieces: batching strips, the CTC loss, metrics, and string-confidence calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from contract import LINE_READER, ModelStore
from contract.ctc import CTC_CLASSES, DecodedDigit, DecodedLine
from training.export import publish_model
from training.models import LineReader
from training.reading import (
    batch_strips,
    ctc_loss,
    edit_distance,
    expected_calibration_error,
    fit_string_calibration,
    fit_string_temperature,
    published_state,
    reading_metrics,
)


@pytest.mark.parametrize(("frame_pixels", "counts"), [(4, [4, 10]), (2, [8, 20])])
def test_strips_are_padded_to_the_widest_with_their_frame_counts(frame_pixels: int, counts: list[int]) -> None:
    batch, frames = batch_strips([np.ones((32, 16), np.float32), np.ones((32, 40), np.float32)], frame_pixels)
    assert batch.shape == (2, 1, 32, 40)
    assert frames.tolist() == counts
    assert float(batch[0, 0, :, 16:].abs().sum()) == 0.0


@pytest.mark.parametrize("frame_pixels", [2, 4])
def test_line_reader_emits_one_frame_per_frame_pixels_columns(frame_pixels: int) -> None:
    logits = LineReader(frame_pixels).eval()(torch.zeros(3, 1, 32, 64))
    assert logits.shape == (3, 64 // frame_pixels, CTC_CLASSES)


def test_the_frame_width_changes_no_weight() -> None:
    # So a run at 2 columns a frame can start from a reader trained at 4.
    wide, narrow = LineReader(4).state_dict(), LineReader(2).state_dict()
    assert {key: value.shape for key, value in wide.items()} == {key: value.shape for key, value in narrow.items()}


def test_ctc_loss_falls_when_the_frames_spell_the_text() -> None:
    frames = torch.tensor([6])
    right = torch.full((1, 6, CTC_CLASSES), -5.0)
    for t, cls in enumerate([0, 3, 0, 5, 0, 0]):
        right[0, t, cls] = 5.0
    assert float(ctc_loss(right, frames, ["24"])) < 0.1
    assert float(ctc_loss(right, frames, ["77"])) > 5.0


@pytest.mark.parametrize(
    ("a", "b", "distance"), [("2026", "2026", 0), ("2026", "226", 1), ("", "12", 2), ("123", "321", 2)]
)
def test_edit_distance(a: str, b: str, distance: int) -> None:
    assert edit_distance(a, b) == distance


def test_reading_metrics() -> None:
    metrics = reading_metrics(["12", "345", "6"], ["12", "355", "67"])
    assert metrics["exact_match"] == pytest.approx(1 / 3)
    assert metrics["digit_accuracy"] == pytest.approx(1 - 2 / 7)


def test_calibration_error_of_a_calibrated_predictor_is_small() -> None:
    rng = np.random.default_rng(0)
    confidence = rng.uniform(size=20_000)
    correct = rng.uniform(size=20_000) < confidence
    assert expected_calibration_error(confidence.tolist(), correct.tolist()) < 0.02
    assert expected_calibration_error([0.99] * 10, [False] * 10) == pytest.approx(0.99)


def test_an_overconfident_reader_gets_a_temperature_above_one() -> None:
    # Sharp frames that spell "1" where half the lines are really "7".
    logits = torch.full((6, CTC_CLASSES), -8.0)
    logits[:, 0] = 8.0
    logits[2, 0], logits[2, 2] = -8.0, 8.0
    temperature = fit_string_temperature([logits] * 10, ["1"] * 5 + ["7"] * 5)
    assert temperature > 1.0


def test_the_string_calibration_recovers_a_known_logistic_relation() -> None:
    # Lines read as "1" whose path probabilities spread over 1e-6..1; each is right with probability
    # sigmoid(0.4 log p + 1.5), drawn with a fixed seed.
    rng = np.random.default_rng(0)
    read_one = [DecodedDigit(label=1, peak_frame=0, first_frame=0, last_frame=0, probabilities=[0.0, 1.0] + [0.0] * 8)]
    log_p = rng.uniform(np.log(1e-6), 0.0, 4000)
    right = rng.uniform(size=4000) < 1.0 / (1.0 + np.exp(-(0.4 * log_p + 1.5)))
    decoded = [DecodedLine(digits=read_one, log_path_probability=float(v)) for v in log_p]

    slope, intercept = fit_string_calibration(decoded, ["1" if r else "7" for r in right])

    assert slope == pytest.approx(0.4, abs=0.06)
    assert intercept == pytest.approx(1.5, abs=0.2)
    confidence = [line.confidence((slope, intercept)) for line in decoded]
    assert expected_calibration_error(confidence, right.tolist()) < 0.03
    assert expected_calibration_error([line.path_probability for line in decoded], right.tolist()) > 0.2


def test_a_run_can_start_from_a_published_readers_weights(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    net = LineReader(2).eval()
    strips = torch.rand(2, 1, 32, 64)
    publish_model(
        store, "reader", net, strips,
        temperature=1.0, ensemble_weight=0.0, metrics={}, training_config={"seed": 3}, data_checksums={},
        commit=None, extra_files={}, signature=LINE_READER, frame_pixels=2,
    )  # fmt: skip

    restored = LineReader(2).eval()
    restored.load_state_dict(published_state(store, "reader:1", seed=3))

    with torch.inference_mode():
        assert torch.equal(restored(strips), net(strips))
    assert store.read_manifest("reader", 1).kind == "line_reader"
    assert store.read_manifest("reader", 1).frame_pixels == 2
    with pytest.raises(ValueError, match="name:version"):
        published_state(store, "reader", seed=3)
    # Another seed holds out other digits, some of which these weights trained on.
    with pytest.raises(ValueError, match="--seed 3"):
        published_state(store, "reader:1", seed=0)
