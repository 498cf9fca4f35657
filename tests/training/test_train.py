"""Training end to end: a quick run into a temporary store, reloaded and used to predict; recipes and seeding."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from contract import ModelStore
from contract.ensemble import calibrated_log_probs, ensemble_probs
from contract.torchscript import load_torchscript
from training.config import TrainConfig, quick_recipe
from training.data import default_data_dir, load_splits
from training.report import CONFUSION_PNG, CURVES_PNG, REPORT_FILE
from training.train import build_parser, config_from_args, fit_model, run, to_inputs

_QUICK = dataclasses.replace(quick_recipe(TrainConfig()), limit=600, eval_limit=600)
_CPU = torch.device("cpu")


def test_quick_run_publishes_models_that_reload_and_predict(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    summary = run({"mlp": _QUICK, "lenet5": _QUICK}, default_data_dir(), store, _CPU)

    test = load_splits(default_data_dir(), _QUICK).test
    log_probs, weights = [], []
    for name in ("mlp", "lenet5"):
        verified = store.read_verified(name, store.resolve(name))
        manifest = verified.manifest
        assert manifest.version == 1 and manifest.training_config["epochs"] == 1
        assert len(manifest.data_checksums) == 4 and manifest.metrics["export_max_abs_diff"] <= 1e-4
        folder = store.version_dir(name, 1)
        assert all((folder / f).is_file() for f in (REPORT_FILE, CONFUSION_PNG, CURVES_PNG))
        with torch.inference_mode():
            logits = load_torchscript(verified.model_bytes)(to_inputs(test.images, _CPU))
        accuracy = float((logits.argmax(dim=1) == test.labels).double().mean())
        # The reloaded model reproduces the accuracy the trainer recorded, and has learned something (five batches
        # of strongly warped digits: at least twice chance).
        assert accuracy == pytest.approx(manifest.metrics["test"]["accuracy"], abs=1 / len(test))
        assert accuracy > 0.2
        log_probs.append(calibrated_log_probs(logits, manifest.temperature))
        weights.append(manifest.ensemble_weight)

    ensemble = summary["ensemble"]
    combined = ensemble_probs(log_probs, weights)
    assert float((combined.argmax(dim=1) == test.labels).double().mean()) == pytest.approx(
        ensemble["accuracy"], abs=1 / len(test)
    )
    assert sum(weights) == pytest.approx(1.0)


def test_training_is_deterministic_on_the_cpu() -> None:
    config = dataclasses.replace(_QUICK, limit=300)
    splits = load_splits(default_data_dir(), config)
    first = fit_model("mlp", splits, config, _CPU).net.state_dict()
    second = fit_model("mlp", splits, config, _CPU).net.state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_models_of_one_run_must_share_their_data() -> None:
    with pytest.raises(ValueError, match="same images"):
        run({"mlp": _QUICK, "cnn": dataclasses.replace(_QUICK, seed=1)}, default_data_dir(), None, _CPU)


def test_reference_recipe_flags_reproduce_the_reference_design() -> None:
    config = config_from_args(build_parser().parse_args(["--recipe", "reference", "--protocol", "seed"]), "cnn")
    assert (config.optimizer, config.batch_size, config.epochs, config.lr) == ("adam", 32, 10, 1e-3)
    assert config.schedule == "constant" and not config.augment.enabled and config.protocol == "seed"


def test_explicit_flags_override_the_recipe() -> None:
    args = build_parser().parse_args(["--epochs", "3", "--lr", "0.01", "--hflip", "--limit", "500"])
    config = config_from_args(args, "mlp")
    assert (config.epochs, config.lr, config.limit) == (3, 0.01, 500)
    assert config.augment.hflip and config.augment.enabled


def test_default_recipe_flips_nothing_and_augments() -> None:
    config = config_from_args(build_parser().parse_args([]), "lenet5")
    assert config == TrainConfig()
    assert config.augment.enabled and not config.augment.hflip
