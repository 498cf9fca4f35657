"""The command line: ``python -m training --dry-run`` trains all four models quickly and publishes them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from contract import ModelStore
from contract.torchscript import load_torchscript
from training.__main__ import main
from training.data import default_data_dir


def test_dry_run_trains_and_publishes_all_models(tmp_path: Path) -> None:
    store = tmp_path / "store"
    summary_file = tmp_path / "summary.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "training", "--dry-run", "--store", str(store), "--metrics-out", str(summary_file)],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert ModelStore(store).model_names() == ["cnn", "lenet5", "mlp", "reader"]
    assert ModelStore(store).read_manifest("reader", 1).kind == "line_reader"
    assert ModelStore(store).read_manifest("reader", 1).frame_pixels == 2
    assert ModelStore(store).read_manifest("cnn", 1).kind == "digit_classifier"
    summary = json.loads(summary_file.read_text())
    assert set(summary["models"]) == {"mlp", "lenet5", "cnn"}
    assert all(row["version"] == 1 for row in summary["models"].values())
    assert summary["reader"]["version"] == 1
    assert summary["reader"]["config"]["steps"] == 20
    assert "images/s" in completed.stderr


def test_dry_run_without_a_store_publishes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["--dry-run", "--models", "mlp", "--data-dir", str(default_data_dir())]) == 0
    assert list(tmp_path.iterdir()) == []


def test_the_reader_is_sized_and_placed_by_the_command_line(tmp_path: Path) -> None:
    store = tmp_path / "store"
    size = ["--reader-widths", "8", "16", "16", "24", "--reader-hidden", "12"]
    argv = ["--dry-run", "--models", "reader", "--device", "cpu", "--store", str(store), *size,
            "--data-dir", str(default_data_dir())]  # fmt: skip

    assert main(argv) == 0

    manifest = ModelStore(store).read_manifest("reader", 1)
    assert manifest.training_config["widths"] == [8, 16, 16, 24]
    assert manifest.training_config["hidden"] == 12
    weights = load_torchscript(ModelStore(store).read_verified("reader", 1).model_bytes).state_dict()
    assert weights["features.0.weight"].shape[0] == 8
    assert weights["rnn.weight_hh_l0"].shape == (4 * 12, 12)
    assert manifest.string_calibration is not None

    # No steps from a published reader: the same weights, calibrated again, published as the next version.
    assert main([*argv, "--reader-steps", "0", "--reader-init-from", "reader:1"]) == 0
    again = ModelStore(store).read_verified("reader", 2)
    assert again.manifest.training_config["steps"] == 0
    assert again.manifest.string_calibration == manifest.string_calibration
    rebuilt = load_torchscript(again.model_bytes).state_dict()
    assert all(torch.equal(rebuilt[key], weights[key]) for key in weights)
