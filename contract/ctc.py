"""The line reader's output contract: CTC frames over a blank and the ten digits, and their greedy decoding.

The reader emits, for each frame of the strip (its manifest's ``frame_pixels`` columns), logits over
``CTC_CLASSES`` (index 0 the CTC blank, index ``d + 1`` the digit ``d``). Greedy (best-path) decoding takes each
frame's most likely class, merges repeats and drops blanks (Graves et al. 2006). The trainer scores validation lines
and the service answers requests with this same function, so the two cannot disagree about what a model read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from contract.store import NUM_CLASSES

BLANK = 0
CTC_CLASSES = NUM_CLASSES + 1


@dataclass(frozen=True)
class DecodedDigit:
    """One read digit: its label, the frame where it peaks, the frames it spans, and its ten digit probabilities
    (the peak frame's distribution over the digits, renormalised without the blank)."""

    label: int
    peak_frame: int
    first_frame: int
    last_frame: int
    probabilities: list[float]

    @property
    def confidence(self) -> float:
        return self.probabilities[self.label]


@dataclass(frozen=True)
class DecodedLine:
    """The digits read from one line and the log-probability of the best path (every frame's most likely class;
    kept as a logarithm because a long uncertain line's path probability underflows)."""

    digits: list[DecodedDigit]
    log_path_probability: float

    @property
    def text(self) -> str:
        return "".join(str(digit.label) for digit in self.digits)

    @property
    def path_probability(self) -> float:
        return math.exp(self.log_path_probability)

    def confidence(self, calibration: tuple[float, float] | None) -> float:
        """The probability that the whole string is right: the path probability through the reader's
        ``string_calibration`` (its manifest's), or the path probability itself when it has none.

        The path probability multiplies every frame's, blanks included, so a right reading of a long line
        rarely comes close to 1; the logistic map on its logarithm, fitted on validation lines, makes it a
        probability a client can act on.
        """
        if calibration is None:
            return self.path_probability
        slope, intercept = calibration
        logit = slope * self.log_path_probability + intercept
        # The logistic function in the form that cannot overflow for either sign of the logit.
        if logit >= 0:
            return 1.0 / (1.0 + math.exp(-logit))
        odds = math.exp(logit)
        return odds / (1.0 + odds)


def greedy_decode(log_probs: torch.Tensor) -> DecodedLine:
    """Best-path decoding of one line's ``(T, CTC_CLASSES)`` log-probabilities (already calibrated)."""
    if log_probs.dim() != 2 or log_probs.shape[1] != CTC_CLASSES:
        raise ValueError(f"expected (T, {CTC_CLASSES}) log-probabilities, got {tuple(log_probs.shape)}")
    best_log_probs, best = log_probs.max(dim=1)
    classes = best.tolist()
    digits: list[DecodedDigit] = []
    frame = 0
    while frame < len(classes):
        label = classes[frame]
        end = frame
        while end + 1 < len(classes) and classes[end + 1] == label:
            end += 1
        if label != BLANK:
            run = best_log_probs[frame : end + 1]
            peak = frame + int(run.argmax())
            digit_probs = log_probs[peak, 1:].exp()
            digits.append(
                DecodedDigit(
                    label=label - 1,
                    peak_frame=peak,
                    first_frame=frame,
                    last_frame=end,
                    probabilities=(digit_probs / digit_probs.sum()).tolist(),
                )
            )
        frame = end + 1
    return DecodedLine(digits=digits, log_path_probability=float(best_log_probs.double().sum()))


def encode_targets(text: str) -> list[int]:
    """CTC target indices of a digit string (digit ``d`` is class ``d + 1``)."""
    if not text.isdigit() or not text.isascii():
        raise ValueError(f"{text!r} is not a string of digits")
    return [int(char) + 1 for char in text]
