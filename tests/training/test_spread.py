"""The seed spread: one full train-and-assess per seed, summarised as mean and standard deviation."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from training.spread import main, merge, summarise


def test_summarise_gives_mean_and_sample_deviation() -> None:
    assert summarise([0.99, 0.993, 0.996]) == pytest.approx({"mean": 0.993, "std": 0.003})
    assert summarise([0.5]) == {"mean": 0.5, "std": 0.0}


def test_quick_spread_over_two_seeds_reports_each_run_and_the_summary(tmp_path: Path) -> None:
    out = tmp_path / "spread.json"

    assert main(["--models", "mlp", "lenet5", "--seeds", "0", "1", "--dry-run", "--out", str(out)]) == 0

    result = json.loads(out.read_text())
    assert result["recipe"] == "quick" and result["seeds"] == [0, 1]
    assert set(result["runs"]["0"]) == {"mlp", "lenet5", "ensemble"}
    for name, splits in result["summary"].items():
        tests = [result["runs"][seed][name]["test"] for seed in ("0", "1")]
        assert splits["test"]["mean"] == pytest.approx(statistics.fmean(tests))
        assert splits["test"]["std"] == pytest.approx(statistics.stdev(tests))
        assert 0.5 < splits["validation"]["mean"] <= 1.0
    # Different seeds are different runs.
    assert result["runs"]["0"]["mlp"] != result["runs"]["1"]["mlp"]


def test_merge_combines_seeds_run_apart_and_refuses_overlaps() -> None:
    def result(seed: str, test: float) -> dict[str, Any]:
        row = {"mlp": {"validation": test, "test": test}}
        return {"recipe": "default", "models": ["mlp"], "seeds": [int(seed)], "runs": {seed: row}, "summary": {}}

    merged = merge([result("2", 0.99), result("0", 0.993), result("1", 0.996)])

    assert merged["seeds"] == [0, 1, 2]
    assert merged["summary"]["mlp"]["test"] == pytest.approx({"mean": 0.993, "std": 0.003})
    with pytest.raises(ValueError, match="appears twice"):
        merge([result("0", 0.99), result("0", 0.99)])
