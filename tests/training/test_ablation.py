"""The augmentation ablation measures against version 1's recipe, whatever the default has become since."""

from __future__ import annotations

from training.ablation import variants, version_1
from training.config import TrainConfig, default_recipe


def test_the_baseline_is_version_1s_augmentation_for_every_model() -> None:
    # Version 1: shear up to 8 degrees (5 for the MLP), pens as they are.
    for model, shear in (("mlp", 5.0), ("lenet5", 8.0), ("cnn", 8.0)):
        baseline = version_1(default_recipe(TrainConfig(), model))
        assert (baseline.augment.shear_deg, baseline.augment.stroke_prob) == (shear, 0.0)


def test_the_two_kept_changes_together_are_the_default_recipe() -> None:
    default = default_recipe(TrainConfig(), "lenet5")
    changes = variants(version_1(default))
    assert changes["slant"].augment.shear_deg == default.augment.shear_deg
    assert changes["stroke"].augment.stroke_prob == default.augment.stroke_prob
    assert changes["default"] == version_1(default)
