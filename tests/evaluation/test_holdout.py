"""The digits a published model held out: the same split its training drew, and the intersection across models."""

from __future__ import annotations

import torch

from contract import ModelStore
from evaluation.holdout import held_out, held_out_by_all
from harness.server import REPO_ROOT
from training.data import Subset, default_data_dir, load_mnist, stratified_split

STORE = ModelStore(REPO_ROOT / "model_store")


def _pool() -> Subset:
    return Subset(*load_mnist(default_data_dir(), "train"))


def test_held_out_digits_are_the_split_the_manifest_names() -> None:
    pool = _pool()
    config = STORE.read_manifest("reader", 5).training_config

    held = held_out(STORE, "reader", 5, pool)

    assert len(held) == config["validation_size"] == 5000
    assert torch.equal(held, stratified_split(pool.labels, 5000, int(config["seed"]))[1])


def test_digits_held_out_by_every_model_lie_in_each_models_hold_out_only() -> None:
    pool = _pool()
    reader = set(held_out(STORE, "reader", 5, pool).tolist())
    check = set(held_out(STORE, "check", 3, pool).tolist())

    common = held_out_by_all(STORE, {"reader": 5, "check": 3}, pool)

    # The reader (seed 2) and the check (seed 0) hold out different digits; a few hundred are in both.
    assert set(common.tolist()) == reader & check
    assert 200 < len(common) < 1000
    assert common.tolist() == sorted(common.tolist())
    # Every class is there, so validation pages can spell any number.
    assert set(pool.labels[common].tolist()) == set(range(10))
