"""Check versions compared on the trainer's validation split: real short training runs published into a store."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from contract import ModelStore
from evaluation.check_validation import compare_versions, main
from tests.training.test_check import VALIDATION_PARTS
from training.check import check_config, run_check
from training.data import default_data_dir

_SCALE = 0.01


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    """Versions 1 and 2 trained with seed 0 (one validation split), version 3 with seed 1: LeNet-5 checks on a
    hundredth of the images, so the runs are quick."""
    store = ModelStore(tmp_path_factory.mktemp("checks") / "store")
    for seed, epochs in ((0, 1), (0, 2), (1, 1)):
        config = dataclasses.replace(check_config(seed), epochs=epochs)
        run_check(config, default_data_dir(), store, torch.device("cpu"), scale=_SCALE, network="lenet5")
    return store


def test_versions_are_calibrated_and_measured_on_one_validation_split(store: ModelStore) -> None:
    result = compare_versions(store, [1, 2], default_data_dir(), scale=_SCALE)

    assert set(result["versions"]) == {"1", "2"}
    for version, row in result["versions"].items():
        manifest = store.read_manifest("check", int(version))
        # Recalibrated on the same split the trainer used: the same threshold the version was published with.
        assert row["threshold"] == pytest.approx(manifest.pass_threshold)
        assert set(row["parts"]) == VALIDATION_PARTS
        assert row["at_threshold"]["digits_passed"] >= result["pass_rate"] - 1e-3
    assert result["versions"]["1"]["parts"] != result["versions"]["2"]["parts"]


def test_versions_with_different_validation_splits_are_not_compared(store: ModelStore) -> None:
    with pytest.raises(ValueError, match="different validation digits"):
        compare_versions(store, [1, 3], default_data_dir(), scale=_SCALE)


def test_main_writes_the_comparison(store: ModelStore, tmp_path: Path) -> None:
    out = tmp_path / "comparison.json"

    assert main(["--store", str(store.root), "--versions", "1", "2", "--out", str(out), "--dry-run"]) == 0

    result = json.loads(out.read_text())
    assert set(result["versions"]) == {"1", "2"}
    assert result["validation_images"] > 0
