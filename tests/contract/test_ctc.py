"""Greedy CTC decoding: repeats merge, blanks separate equal digits, probabilities and spans come from the frames."""

from __future__ import annotations

import math

import pytest
import torch

from contract.ctc import BLANK, CTC_CLASSES, encode_targets, greedy_decode


def _frames(classes: list[int], peak: float = 0.9) -> torch.Tensor:
    """Log-probabilities whose best class per frame is ``classes[t]`` with probability ``peak``."""
    rest = (1.0 - peak) / (CTC_CLASSES - 1)
    probs = torch.full((len(classes), CTC_CLASSES), rest)
    for t, cls in enumerate(classes):
        probs[t, cls] = peak
    return probs.log()


def test_repeats_merge_and_blanks_are_dropped() -> None:
    decoded = greedy_decode(_frames([BLANK, 3, 3, BLANK, BLANK, 8, BLANK]))
    assert decoded.text == "27"
    assert [(d.first_frame, d.last_frame) for d in decoded.digits] == [(1, 2), (5, 5)]


def test_a_blank_between_equal_digits_keeps_both() -> None:
    assert greedy_decode(_frames([2, BLANK, 2, 2, BLANK, 2])).text == "111"


def test_only_blanks_read_as_an_empty_string() -> None:
    decoded = greedy_decode(_frames([BLANK] * 4))
    assert decoded.text == ""
    assert decoded.digits == []


def test_the_path_probability_multiplies_the_best_frames() -> None:
    decoded = greedy_decode(_frames([BLANK, 5, BLANK], peak=0.8))
    assert decoded.path_probability == pytest.approx(0.8**3, rel=1e-5)


def test_the_string_confidence_is_the_path_probability_through_the_calibration() -> None:
    decoded = greedy_decode(_frames([BLANK, 5, BLANK], peak=0.8))
    assert decoded.confidence(None) == decoded.path_probability
    slope, intercept = 0.5, 2.0
    expected = 1.0 / (1.0 + math.exp(-(slope * math.log(decoded.path_probability) + intercept)))
    assert decoded.confidence((slope, intercept)) == pytest.approx(expected)


def test_a_path_too_improbable_for_floating_point_still_gets_a_confidence() -> None:
    # 4,000 frames at 0.5: a path probability of 2^-4000, which underflows even in double precision.
    decoded = greedy_decode(_frames([5] * 4000, peak=0.5))
    assert decoded.log_path_probability == pytest.approx(4000 * math.log(0.5), rel=1e-4)
    assert decoded.path_probability == 0.0
    assert decoded.confidence((1.16, 2.18)) == pytest.approx(0.0, abs=1e-300)
    assert decoded.confidence((-1.0, 0.0)) == 1.0


def test_digit_probabilities_leave_out_the_blank_and_peak_at_the_best_frame() -> None:
    log_probs = _frames([BLANK, 4, 4, BLANK], peak=0.6)
    log_probs[2] = _frames([4], peak=0.95)[0]
    digit = greedy_decode(log_probs).digits[0]
    assert digit.label == 3
    assert digit.peak_frame == 2
    assert sum(digit.probabilities) == pytest.approx(1.0, abs=1e-5)
    rest = 0.05 / (CTC_CLASSES - 1)
    assert digit.confidence == pytest.approx(0.95 / (1.0 - rest), rel=1e-5)
    assert math.isclose(max(digit.probabilities), digit.confidence)


def test_wrong_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="expected"):
        greedy_decode(torch.zeros(4, 10))


def test_targets_shift_digits_past_the_blank() -> None:
    assert encode_targets("2026") == [3, 1, 3, 7]
    with pytest.raises(ValueError, match="not a string of digits"):
        encode_targets("2O26")
