"""The comparison report's rendering: a hand-made comparison written as markdown and PNGs."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch
from PIL import Image

from contract import Manifest
from evaluation.corruptions import SWEEPS
from evaluation.report import (
    RELIABILITY_PNG,
    REPORT_FILE,
    ROBUSTNESS_PNG,
    summary_rows,
    top_confusions,
    write_report,
)
from evaluation.results import (
    ENSEMBLE,
    Agreement,
    Column,
    Comparison,
    Speed,
    mcnemar_exact,
    wilson_interval,
)
from training.metrics import metrics_from_probs, reliability_bins

TEST_IMAGES = 200
USPS_IMAGES = 50
# Images each column gets right, out of TEST_IMAGES: the ensemble last, as the generator orders them.
CORRECT = {"mlp": 180, "cnn": 190, ENSEMBLE: 194}


def hand_made_column(index: int, name: str, correct: int) -> Column:
    """A column whose first ``correct`` test images are right and the rest are mistaken for the next digit."""
    labels = torch.arange(TEST_IMAGES) % 10
    predictions = torch.where(torch.arange(TEST_IMAGES) < correct, labels, (labels + 1) % 10)
    probs = torch.softmax(4.0 * torch.nn.functional.one_hot(predictions, 10).double(), dim=1)
    return Column(
        name=name,
        parameters=1000 * (index + 1),
        size_bytes=4096 * (index + 1),
        macs=250_000 * (index + 1),
        test=metrics_from_probs(probs, labels),
        reliability=reliability_bins(probs, labels),
        predictions=predictions,
        usps_correct=USPS_IMAGES - 5 + index,
        robustness={s.name: [0.95 - 0.1 * level for level in range(len(s.levels))] for s in SWEEPS},
        cpu=Speed(latency_ms=0.5 * (index + 1), throughput_per_s=5000.0 / (index + 1)),
        cuda=None,
    )


@pytest.fixture(scope="module")
def comparison() -> Comparison:
    columns = [hand_made_column(index, name, correct) for index, (name, correct) in enumerate(CORRECT.items())]
    manifests = [
        Manifest(name=c.name, version=1, created=datetime(2024, 1, 1, tzinfo=UTC), torch_version="2.0",
                 sha256=f"{i:x}" * 64, size_bytes=c.size_bytes, parameters=c.parameters)
        for i, c in enumerate(columns[:-1])
    ]  # fmt: skip
    return Comparison(
        manifests=manifests,
        columns=columns,
        agreement=Agreement(
            samples=TEST_IMAGES,
            all_agree=185,
            accuracy_when_agree=0.97,
            accuracy_when_disagree={"mlp": 0.4, "cnn": 0.6, ENSEMBLE: 0.7},
            best_single="cnn",
            ensemble_only=6,
            best_only=2,
            p_value=mcnemar_exact(6, 2),
        ),
        test_images=TEST_IMAGES,
        robustness_images=100,
        usps_images=USPS_IMAGES,
        usps_refused=1,
        seed=0,
        timing_threads=1,
        cpu_name="test CPU (1 logical CPUs)",
        load_average=0.5,
        latency_runs=2,
        throughput_runs=2,
        cuda_device=None,
    )


def test_top_confusions_are_the_largest_off_diagonal_cells_in_a_stable_order() -> None:
    matrix = [[50, 3, 0], [1, 40, 3], [7, 0, 45]]
    assert top_confusions(matrix, limit=3) == [(2, 0, 7), (0, 1, 3), (1, 2, 3)]
    assert top_confusions([[5, 0], [0, 5]]) == []


def test_summary_rows_show_the_measured_numbers_with_their_intervals(comparison: Comparison) -> None:
    rows = {row[0]: row[1:] for row in summary_rows(comparison)}
    intervals = [wilson_interval(correct, TEST_IMAGES) for correct in CORRECT.values()]
    assert rows["MNIST test accuracy [95 % CI]"] == [
        f"{100 * correct / TEST_IMAGES:.2f} % [{100 * low:.2f}, {100 * high:.2f}]"
        for correct, (low, high) in zip(CORRECT.values(), intervals, strict=True)
    ]
    assert rows["errors"] == [f"{TEST_IMAGES - correct} of {TEST_IMAGES}" for correct in CORRECT.values()]
    assert rows["parameters"] == ["1,000", "2,000", "3,000"]
    assert rows["CPU latency, batch 1 (median)"] == ["0.50 ms", "1.00 ms", "1.50 ms"]
    assert not any(title.startswith("CUDA") for title in rows)
    with_cuda = {row[0]: row[1:] for row in summary_rows(dataclasses.replace(comparison, cuda_device="a GPU"))}
    assert with_cuda["CUDA latency, batch 1 (median)"] == ["-", "-", "-"]


def test_the_report_is_written_deterministically(comparison: Comparison, tmp_path: Path) -> None:
    first = write_report(comparison, tmp_path / "a")
    second = write_report(comparison, tmp_path / "b")
    names = sorted(p.name for p in first.parent.iterdir())
    assert names == sorted(p.name for p in second.parent.iterdir())
    assert {REPORT_FILE, RELIABILITY_PNG, ROBUSTNESS_PNG} | {f"robustness_{s.name}.png" for s in SWEEPS} == set(names)
    for name in names:
        assert (first.parent / name).read_bytes() == (second.parent / name).read_bytes(), name
    with Image.open(first.parent / RELIABILITY_PNG) as image:
        assert "Software" not in image.info
