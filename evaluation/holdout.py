"""The MNIST training digits a published model never trained on, read from its manifest.

Every training run holds out ``validation_size`` training digits, stratified by its ``seed``
(:func:`training.data.stratified_split`). Validation data for a choice made *after* training (which version to
publish, a threshold on a model's confidence) must come from those digits; digits the model trained on make it
look better than it is.
"""

from __future__ import annotations

import torch

from contract import ModelStore
from training.data import Subset, stratified_split


def held_out(store: ModelStore, name: str, version: int, pool: Subset) -> torch.Tensor:
    """Indices into the training split ``pool`` of the digits version ``version`` of ``name`` held out."""
    trained = store.read_manifest(name, version).training_config
    _, held = stratified_split(pool.labels, int(trained["validation_size"]), int(trained["seed"]))
    return held


def held_out_by_all(store: ModelStore, models: dict[str, int], pool: Subset) -> torch.Tensor:
    """Indices (sorted) of the training digits that every one of ``models`` (name to version) held out."""
    common: set[int] | None = None
    for name, version in models.items():
        indices = set(held_out(store, name, version, pool).tolist())
        common = indices if common is None else common & indices
    return torch.tensor(sorted(common or ()), dtype=torch.long)
