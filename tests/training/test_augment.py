"""The batched warps: identity when disabled or zero-range, real motion when enabled, reproducible by seed."""

from __future__ import annotations

import dataclasses

import torch

from training.augment import augment_batch, random_affine_matrices
from training.config import AugmentConfig

_STILL = AugmentConfig(rotation_deg=0, translate_frac=0, scale_min=1, scale_max=1, shear_deg=0)


def _blob(offset: int = 0) -> torch.Tensor:
    images = torch.zeros(4, 1, 28, 28)
    images[:, :, 10 + offset : 18 + offset, 12:16] = 1.0
    return images


def _centre_of_mass_column(images: torch.Tensor) -> torch.Tensor:
    columns = torch.arange(28, dtype=torch.float32)
    return (images.sum(dim=(1, 2)) * columns).sum(dim=1) / images.sum(dim=(1, 2, 3))


def test_disabled_augmentation_returns_the_batch_unchanged() -> None:
    images = _blob()
    assert augment_batch(images, AugmentConfig(enabled=False), torch.Generator()) is images


def test_zero_ranges_give_the_identity_warp() -> None:
    images = _blob()
    warped = augment_batch(images, _STILL, torch.Generator().manual_seed(0))
    assert torch.allclose(warped, images, atol=1e-5)


def test_translation_moves_the_digit_within_the_configured_range() -> None:
    config = dataclasses.replace(_STILL, translate_frac=0.1)
    images = _blob().repeat(64, 1, 1, 1)
    shift = _centre_of_mass_column(augment_batch(images, config, torch.Generator().manual_seed(0)))
    shift -= _centre_of_mass_column(images)
    assert shift.abs().max() <= 0.1 * 28 + 0.5
    assert shift.abs().max() > 1.0


def test_flips_are_off_by_default_and_mirror_when_enabled() -> None:
    images = _blob()
    assert not AugmentConfig().hflip
    flipped = augment_batch(images, dataclasses.replace(_STILL, hflip=True), torch.Generator().manual_seed(1))
    mirrored = [torch.allclose(f, i.flip(-1), atol=1e-5) for f, i in zip(flipped, images, strict=True)]
    unchanged = [torch.allclose(f, i, atol=1e-5) for f, i in zip(flipped, images, strict=True)]
    assert all(m or u for m, u in zip(mirrored, unchanged, strict=True)) and any(mirrored)


def test_elastic_distortion_changes_pixels_but_keeps_range_and_shape() -> None:
    images = _blob()
    warped = augment_batch(images, dataclasses.replace(_STILL, elastic=True), torch.Generator().manual_seed(0))
    assert warped.shape == images.shape
    assert not torch.allclose(warped, images, atol=1e-3)
    assert warped.min() >= 0 and warped.max() <= 1 + 1e-6


def test_the_same_seed_gives_the_same_warps() -> None:
    config = AugmentConfig(elastic=True)
    first = augment_batch(_blob(), config, torch.Generator().manual_seed(7))
    second = augment_batch(_blob(), config, torch.Generator().manual_seed(7))
    assert torch.equal(first, second)


def test_affine_matrices_stay_near_the_identity() -> None:
    theta = random_affine_matrices(256, AugmentConfig(), torch.Generator().manual_seed(0))
    linear = theta[:, :, :2]
    determinant = torch.linalg.det(linear)
    # Output-to-input maps: the determinant is 1 / scale^2 (shear preserves area).
    assert determinant.min() >= 1 / 1.1**2 - 1e-5 and determinant.max() <= 1 / 0.9**2 + 1e-5
    assert theta[:, :, 2].abs().max() <= 0.2


def test_stroke_changes_make_strokes_bolder_or_thinner_and_never_erase_a_digit() -> None:
    images = torch.zeros(200, 1, 28, 28)
    images[:, :, 8:20, 12:15] = 1.0  # a 3-pixel-wide bar
    thin = torch.zeros(1, 1, 28, 28)
    thin[:, :, 8:20, 13] = 1.0  # one pixel wide: erosion would erase it
    config = dataclasses.replace(_STILL, stroke_prob=1.0)

    changed = augment_batch(images, config, torch.Generator().manual_seed(0))
    kept = augment_batch(thin, config, torch.Generator().manual_seed(1))

    widths = changed[:, 0, 14].sum(dim=1).round()  # the bar's width in its middle row
    assert set(widths.tolist()) == {1.0, 5.0}
    assert (widths == 5).sum() > 50
    assert (widths == 1).sum() > 50
    assert kept.sum() >= thin.sum()


def test_stroke_probability_zero_leaves_strokes_alone() -> None:
    images = _blob()
    assert torch.equal(augment_batch(images, _STILL, torch.Generator().manual_seed(0)), images)
