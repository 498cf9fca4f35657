"""The digit check's held-out measurement: rates per category, the bars, the trade-off and the ensemble baseline."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from contract import ModelStore
from evaluation.digit_check import (
    DIGIT_PASS_BAR,
    HELD_OUT_SEED,
    NOT_DIGIT_FLAG_BAR,
    SEVERAL_FLAG_BAR,
    Category,
    flagged_read_right,
    lowest_flagged,
    main,
    measure,
    right_reason,
)
from service.inference import CheckResult
from tests.support.stand_ins import CHECK_THRESHOLD, MODEL_NAMES, publish, publish_check


def _category(name: str, kind: str, count: int, refused: int = 0) -> Category:
    mask = np.zeros(count, dtype=np.bool_)
    mask[:refused] = True
    return Category(name, kind, np.zeros((count, 28, 28), dtype=np.uint8), mask)


def test_rates_count_refused_uploads_as_never_passing() -> None:
    categories = [
        _category("digits", "one digit", 4, refused=1),
        _category("numbers", "several digits", 4, refused=1),
        _category("letters", "not a digit", 4),
    ]
    scores = {
        "digits": torch.tensor([0.9, 0.9, 0.9, 0.1]),
        "numbers": torch.tensor([0.9, 0.9, 0.1, 0.1]),
        "letters": torch.tensor([0.9, 0.1, 0.1, 0.1]),
    }

    rows = measure(categories, scores, threshold=0.5, bars=True)

    assert rows["digits"] == {
        "kind": "one digit", "images": 4, "refused": 1, "rate": 0.5, "bar": DIGIT_PASS_BAR, "meets_bar": False,
    }  # fmt: skip
    assert (rows["numbers"]["rate"], rows["numbers"]["bar"]) == (0.75, SEVERAL_FLAG_BAR)
    assert (rows["letters"]["rate"], rows["letters"]["bar"]) == (0.75, NOT_DIGIT_FLAG_BAR)


def test_right_reason_is_the_share_of_flagged_images_given_their_own_kind() -> None:
    # The first image passes; of the three flagged, two are called "several digits".
    verdicts = [
        CheckResult("check", 1, one_digit=reason is None, reason=reason, score=score, threshold=0.5)
        for reason, score in [(None, 0.9), ("several digits", 0.1), ("several digits", 0.2), ("not a digit", 0.1)]
    ]

    assert right_reason(verdicts, _category("numbers", "several digits", 4)) == 2 / 3
    assert right_reason(verdicts, _category("letters", "not a digit", 4)) == 1 / 3
    assert right_reason(verdicts, _category("digits", "one digit", 4)) is None


def test_flagged_read_right_is_the_share_of_flagged_digits_the_ensemble_reads_right() -> None:
    refused = np.array([False, False, False, True])
    digits = Category("digits", "one digit", np.zeros((4, 28, 28), dtype=np.uint8), refused, torch.tensor([1, 2, 3, 4]))
    scores = torch.tensor([0.9, 0.1, 0.1, 0.1])  # the refused upload never reaches the models
    readings = torch.tensor([1, 2, 7, 4])

    assert flagged_read_right(scores, readings, digits, threshold=0.5) == 0.5
    assert flagged_read_right(torch.ones(4), readings, digits, threshold=0.5) is None
    assert flagged_read_right(scores, readings, _category("letters", "not a digit", 4), threshold=0.5) is None


def test_lowest_flagged_shows_the_flagged_digits_that_reach_the_models_lowest_score_first() -> None:
    images = np.arange(5, dtype=np.uint8)[:, None, None] * np.ones((1, 28, 28), dtype=np.uint8)
    refused = np.array([False, False, True, False, False])
    category = Category("scan", "one digit", images, refused, torch.tensor([1, 2, 3, 4, 5]))
    scores = torch.tensor([0.3, 0.05, 0.0, 0.9, 0.1])

    shown = lowest_flagged(scores, torch.tensor([1, 7, 3, 4, 5]), category, threshold=0.5, count=2)

    assert shown is not None
    assert [int(image[0, 0]) for image in shown.images] == [1, 4]
    assert shown.labels == [2, 5]
    assert shown.readings == [7, 5]
    assert shown.scores == pytest.approx([0.05, 0.1])
    assert lowest_flagged(scores, torch.zeros(5), category, threshold=0.01) is None
    assert lowest_flagged(scores, torch.zeros(5), dataclasses.replace(category, labels=None), threshold=0.5) is None


def test_main_writes_every_category_the_curve_and_the_baseline(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    for name in MODEL_NAMES:
        publish(store, name)
    publish_check(store)

    assert main(["--store", str(store.root), "--per-category", "4", "--out", str(tmp_path / "out")]) == 0

    result = json.loads((tmp_path / "out" / "digit_check.json").read_text())
    assert (tmp_path / "out" / "digit_check.png").stat().st_size > 0
    assert (tmp_path / "out" / "digit_check_flagged.png").stat().st_size > 0
    assert result["check"] == {"name": "check", "version": 1, "threshold": CHECK_THRESHOLD}
    assert result["draw"] == {"seed": HELD_OUT_SEED, "per_category": 4}
    assert set(result["right_reason"]) == {
        name for name, row in result["categories"].items() if row["kind"] != "one digit"
    }
    # The stand-in check flags every digit, so every digit category reports how many of them the models read right.
    assert set(result["flagged_digits_read_right"]) == {
        name for name, row in result["categories"].items() if row["kind"] == "one digit"
    }
    kinds = {row["kind"] for row in result["categories"].values()}
    assert kinds == {"one digit", "several digits", "not a digit"}
    # The stand-in flags everything as not a digit: no digit passes, every other image is flagged.
    for row in result["categories"].values():
        assert row["rate"] == (0.0 if row["kind"] == "one digit" else 1.0)
    assert result["categories"]["MNIST test"]["images"] == 10_000
    assert len(result["trade_off"]) == 99
    assert set(result["ensemble_confidence"]["categories"]) == set(result["categories"])
    assert 0.0 < result["ensemble_confidence"]["threshold"] <= 1.0
