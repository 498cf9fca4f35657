"""The augmentation ablation measures against version 1's augmentation, whatever the default has become since."""

from __future__ import annotations

import dataclasses

from training.ablation import BASELINE_AUGMENT, variants
from training.config import TrainConfig, default_recipe


def test_the_two_kept_changes_are_the_default_recipe_of_the_convolutional_models() -> None:
    for model in ("lenet5", "cnn"):
        default = default_recipe(TrainConfig(), model)
        changes = variants(dataclasses.replace(default, augment=BASELINE_AUGMENT))
        assert changes["default"].augment == BASELINE_AUGMENT
        assert changes["slant"].augment.shear_deg == default.augment.shear_deg
        assert changes["stroke"].augment.stroke_prob == default.augment.stroke_prob
        both = dataclasses.replace(BASELINE_AUGMENT, shear_deg=16.0, stroke_prob=0.3)
        assert default.augment == both


def test_the_mlp_keeps_version_1s_warps() -> None:
    augment = default_recipe(TrainConfig(), "mlp").augment
    assert (augment.shear_deg, augment.stroke_prob) == (5.0, 0.0)
