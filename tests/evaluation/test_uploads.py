"""The upload suite on a slice, through the real preprocessing and the committed models: no upload that shows a
digit is refused, and every category reads at least as well as its bar."""

from __future__ import annotations

from typing import Any

import pytest

from contract import ModelStore
from contract.device import select_device
from evaluation.run import DEFAULT_USPS, load_members
from evaluation.uploads import ENSEMBLE, USPS_EDGE, USPS_MARGIN, Category, build_suite, evaluate, markdown_table
from harness.server import REPO_ROOT
from training.data import default_data_dir

PER_CATEGORY = 40
# On 40 images one error is 2.5 points: the slice allows two per category, the committed report holds the real bar.
SLICE_BAR = 0.95 - 1e-6
# Together the MNIST categories read at least 99 % (8 errors in 800): the upload suite's bar for real single digits.
POOLED_BAR = 0.99 - 1e-6


@pytest.fixture(scope="module")
def suite() -> list[Category]:
    return build_suite(PER_CATEGORY, seed=1, data_dir=default_data_dir(), usps_path=DEFAULT_USPS)


@pytest.fixture(scope="module")
def results(suite: list[Category]) -> dict[str, dict[str, Any]]:
    members = load_members(ModelStore(REPO_ROOT / "model_store"), {}, select_device("cpu"))
    return evaluate(suite, members)


def test_no_upload_showing_a_digit_is_refused(results: dict[str, dict[str, Any]]) -> None:
    assert {name: row["refused"] for name, row in results.items() if row["refused"]} == {}


def test_every_category_reads_at_least_the_slice_bar(results: dict[str, dict[str, Any]]) -> None:
    accuracy = {name: row["accuracy"][ENSEMBLE] for name, row in results.items()}
    assert {name: value for name, value in accuracy.items() if value < SLICE_BAR} == {}


def test_the_mnist_categories_together_read_at_least_the_pooled_bar(results: dict[str, dict[str, Any]]) -> None:
    mnist = [row for name, row in results.items() if name not in (USPS_EDGE, USPS_MARGIN)]
    correct = sum(row["accuracy"][ENSEMBLE] * row["images"] for row in mnist)
    assert correct / sum(row["images"] for row in mnist) >= POOLED_BAR


def test_usps_edge_to_edge_is_compared_with_the_margin(results: dict[str, dict[str, Any]]) -> None:
    margin = results[USPS_MARGIN]["accuracy"][ENSEMBLE]
    assert results[USPS_EDGE]["reference_accuracy"] == margin


def test_table_has_a_row_per_category(results: dict[str, dict[str, Any]]) -> None:
    table = markdown_table(results, ["mlp", "lenet5", "cnn"])
    assert len(table.splitlines()) == 2 + len(results)
    assert "| scan, tight crop on all sides | 40 | 0 |" in table
