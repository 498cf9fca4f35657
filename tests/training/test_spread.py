"""The seed spread: one full train-and-assess per seed, summarised as mean and standard deviation."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from contract import ModelStore
from training.spread import CHOICE_RULE, choose_seed, main, merge, republish, stage_store, summarise


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


def _result(validation: dict[str, float]) -> dict[str, Any]:
    runs = {seed: {"mlp": {"validation": 0.9}, "ensemble": {"validation": v}} for seed, v in validation.items()}
    return {"models": ["mlp"], "runs": runs}


def test_the_seed_is_chosen_on_ensemble_validation_accuracy_only() -> None:
    assert choose_seed(_result({"0": 0.991, "1": 0.995, "2": 0.993})) == 1
    # A tie goes to the lowest seed, whatever the order of the runs.
    assert choose_seed(_result({"2": 0.995, "1": 0.995, "0": 0.99})) == 1
    single = {"models": ["cnn"], "runs": {"0": {"cnn": {"validation": 0.99}}, "1": {"cnn": {"validation": 0.98}}}}
    assert choose_seed(single) == 0


def test_staged_seeds_publish_the_validation_choice_as_the_next_versions(tmp_path: Path) -> None:
    stage, store_root, out = tmp_path / "stage", tmp_path / "store", tmp_path / "spread.json"
    store = ModelStore(store_root)
    args = ["--models", "mlp", "lenet5", "--dry-run", "--stage", str(stage)]
    assert main([*args, "--seeds", "0", "1", "--out", str(out), "--publish", "--store", str(store_root)]) == 0
    result = json.loads(out.read_text())
    published = result["published"]
    assert published["seed"] == choose_seed(result) and published["rule"] == CHOICE_RULE
    assert published["versions"] == {"mlp": 1, "lenet5": 1}

    # Later versions go on top; the earlier ones stay as they were.
    republish(stage_store(stage, 1 - published["seed"]), "mlp", 1, store)
    republish(stage_store(stage, published["seed"]), "mlp", 1, store)

    assert store.versions("mlp") == [1, 2, 3]
    chosen = stage_store(stage, published["seed"]).read_verified("mlp", 1)
    for version in (1, 3):
        copy = store.read_verified("mlp", version)
        assert copy.model_bytes == chosen.model_bytes
        assert copy.manifest.version == version
        assert copy.manifest.metrics == chosen.manifest.metrics
        assert copy.manifest.ensemble_weight == result["runs"][str(published["seed"])]["mlp"]["weight"]
        files = {p.name for p in store.version_dir("mlp", version).iterdir()}
        assert {"report.md", "learning_curves.png", "confusion_matrix.png"} <= files
    assert store.read_verified("mlp", 2).model_bytes != chosen.model_bytes


def test_publishing_needs_the_staged_seeds() -> None:
    with pytest.raises(SystemExit):
        main(["--seeds", "0", "--dry-run", "--publish"])
