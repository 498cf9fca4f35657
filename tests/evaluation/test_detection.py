"""The page evaluation: box matching and scoring, the choice of the rule on validation pages, and a regression
check of the service's detection path on a small seeded slice of the test pages with the served defaults."""

from __future__ import annotations

import pytest

from contract import ModelStore
from evaluation.detection import Found, build_pages, choose_rule, iou, read_with_service, score
from evaluation.pages import Page, PageNumber
from harness.server import REPO_ROOT
from service.api.detect import NumberRule
from service.config import Settings
from training.data import Subset, default_data_dir, load_mnist

# On these 16 test pages (seed 2027, the evaluation's test seed) the committed reader and check find, keep and read
# most numbers (see reports/detection.json for the whole set); the bars catch a broken detector, reader or rule
# while leaving room for another thread count's rounding.
SLICE_PAGES = 16
SLICE_RECALL = 0.9
SLICE_PRECISION = 0.9
SLICE_EXACT = 0.75


def _page(*numbers: tuple[str, tuple[float, float, float, float]]) -> Page:
    return Page(data=b"", numbers=[PageNumber(text, box) for text, box in numbers])


def test_iou_of_boxes() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0


def test_each_box_matches_at_most_one_number_and_reading_counts_only_when_found() -> None:
    page = _page(("12", (0, 0, 40, 20)), ("7", (100, 0, 110, 20)), ("345", (0, 100, 60, 120)))
    found = [
        Found((1, 0, 40, 20), "12", 0.9, 0.9),  # found, exact
        Found((0, 0, 41, 21), "12", 0.9, 0.9),  # the same number again: a false positive
        Found((100, 0, 111, 20), "1", 0.9, 0.9),  # found, misread
        Found((0, 100, 60, 120), "345", 0.1, 0.9),  # below the path probability bar: not kept
        Found((300, 300, 320, 320), "8", 0.9, 0.2),  # print-like: not kept
    ]

    result = score([page], [found], NumberRule(0.5, 0.5))

    assert (result["numbers"], result["kept"], result["found"]) == (3, 3, 2)
    assert result["recall"] == pytest.approx(2 / 3)
    assert result["precision"] == pytest.approx(2 / 3)
    assert result["end_to_end_exact"] == pytest.approx(1 / 3)


def test_the_rule_is_the_validation_optimum() -> None:
    page = _page(("12", (0, 0, 40, 20)), ("7", (100, 0, 110, 20)))
    found = [
        Found((0, 0, 40, 20), "12", 0.3, 0.95),
        Found((100, 0, 110, 20), "7", 0.9, 0.8),
        Found((200, 0, 260, 20), "1017", 0.8, 0.3),  # a printed word
    ]

    rule, grid = choose_rule([page], [found])

    assert score([page], [found], rule)["precision"] == score([page], [found], rule)["recall"] == 1.0
    assert rule.min_path_probability <= 0.3 and 0.3 < rule.min_digit_likeness <= 0.8
    assert len(grid) == 400


@pytest.mark.slow
def test_committed_reader_finds_and_reads_numbers_on_a_slice_of_the_test_pages() -> None:
    defaults = Settings.model_fields
    rule = NumberRule(defaults["detect_min_path_probability"].default, defaults["detect_min_digit_likeness"].default)
    pages = build_pages(Subset(*load_mnist(default_data_dir(), "test")), SLICE_PAGES, seed=2027)

    found, _version = read_with_service(pages, ModelStore(REPO_ROOT / "model_store"), "reader", "check")
    result = score(pages, found, rule)

    assert result["numbers"] >= 30
    assert result["recall"] >= SLICE_RECALL
    assert result["precision"] >= SLICE_PRECISION
    assert result["end_to_end_exact"] >= SLICE_EXACT
