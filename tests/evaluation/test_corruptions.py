"""The robustness corruptions on synthetic images: identities at strength zero, and the geometry each one promises."""

from __future__ import annotations

import math

import pytest
import torch

from evaluation.corruptions import (
    SWEEPS,
    Sweep,
    add_gaussian_noise,
    centre_of_mass,
    change_stroke_width,
    gaussian_blur,
    prepare_like_service,
    recentre,
    rotate,
    scale,
    translate,
)

SIZE = 28


def digit_like(count: int = 3) -> torch.Tensor:
    """``(count, 1, 28, 28)`` strokes of different shapes, each with its centre of mass at pixel (14, 14)."""
    images = torch.zeros(count, 1, SIZE, SIZE)
    for index in range(count):
        half = 3 + index
        images[index, 0, 14 - half : 15 + half, 13:16] = 1.0  # a vertical stroke three pixels wide
        images[index, 0, 14 - half, 14 - half : 15 + half] = 0.6  # a top bar ...
        images[index, 0, 14 + half, 14 - half : 15 + half] = 0.6  # ... balanced by a bottom bar
    return images


def test_digit_like_images_are_centred_at_14() -> None:
    torch.testing.assert_close(centre_of_mass(digit_like()), torch.full((3, 2), 14.0))


def test_rotation_by_zero_degrees_is_the_identity() -> None:
    images = translate(digit_like(), torch.tensor([[1.0, -2.0], [0.0, 0.0], [-3.0, 1.0]]))
    torch.testing.assert_close(rotate(images, torch.zeros(3)), images)


def test_rotation_turns_clockwise_about_the_centre_of_mass() -> None:
    image = torch.zeros(1, 1, SIZE, SIZE)
    image[0, 0, 11, 14] = 1.0  # two pixels above the centre of mass (14, 13)...
    image[0, 0, 17, 14] = 0.5  # ...and four below, at half the ink
    rotated = rotate(image, torch.tensor([90.0]))
    expected = torch.zeros_like(image)
    expected[0, 0, 13, 16] = 1.0  # up turns to the right
    expected[0, 0, 13, 10] = 0.5  # down turns to the left
    torch.testing.assert_close(rotated, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(centre_of_mass(rotated), centre_of_mass(image), atol=1e-4, rtol=0)


@pytest.mark.parametrize("shift", [(3.0, 0.0), (0.0, -4.0), (-2.0, 5.0), (1.5, -2.5)])
def test_translation_moves_the_centre_of_mass_by_the_requested_pixels(shift: tuple[float, float]) -> None:
    images = digit_like()
    shift_px = torch.tensor([shift] * len(images))
    moved = translate(images, shift_px)
    torch.testing.assert_close(centre_of_mass(moved) - centre_of_mass(images), shift_px, atol=1e-4, rtol=0)
    torch.testing.assert_close(moved.sum(dim=(1, 2, 3)), images.sum(dim=(1, 2, 3)))


def test_whole_pixel_translation_moves_pixels_without_blurring_them() -> None:
    images = digit_like(1)
    moved = translate(images, torch.tensor([[2.0, -3.0]]))
    torch.testing.assert_close(moved, torch.roll(images, shifts=(-3, 2), dims=(2, 3)), atol=1e-6, rtol=0)


def test_the_translation_sweep_moves_every_digit_by_the_level_along_one_axis() -> None:
    sweep = next(s for s in SWEEPS if s.name == "translation")
    images = digit_like()
    moved = sweep.corrupt(images, 4, torch.Generator().manual_seed(0))
    displacement = centre_of_mass(moved) - centre_of_mass(images)
    torch.testing.assert_close(displacement.abs().sum(dim=1), torch.full((3,), 4.0), atol=1e-4, rtol=0)
    assert ((displacement.abs() < 1e-4).sum(dim=1) == 1).all()


def test_the_service_centring_undoes_a_translation_that_keeps_the_ink_in_the_frame() -> None:
    images = digit_like()
    moved = translate(images, torch.tensor([[3.0, 0.0], [0.0, -3.0], [-2.0, 2.0]]))
    torch.testing.assert_close(recentre(moved), images)


def test_recentre_leaves_a_blank_image_blank() -> None:
    blank = torch.zeros(1, 1, SIZE, SIZE)
    torch.testing.assert_close(recentre(blank), blank)


def test_scale_by_one_is_the_identity_and_by_one_and_a_half_stretches_the_spread() -> None:
    images = digit_like()
    torch.testing.assert_close(scale(images, 1.0), images)

    def spread(batch: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(SIZE, dtype=torch.float32).view(1, 1, SIZE, 1)
        mass = batch.sum(dim=(1, 2, 3))
        centre = (batch * rows).sum(dim=(1, 2, 3)) / mass
        return ((batch * (rows - centre.view(-1, 1, 1, 1)) ** 2).sum(dim=(1, 2, 3)) / mass).sqrt()

    # Enlarging samples between pixels (bilinear), so the spread scales almost exactly; shrinking would alias.
    ratio = spread(scale(images, 1.5)) / spread(images)
    torch.testing.assert_close(ratio, torch.full((3,), 1.5), atol=0, rtol=0.05)
    torch.testing.assert_close(centre_of_mass(scale(images, 0.6)), centre_of_mass(images), atol=1e-4, rtol=0)


def test_erosion_reduces_and_dilation_increases_the_ink() -> None:
    images = digit_like()
    mass = images.sum(dim=(1, 2, 3))
    torch.testing.assert_close(change_stroke_width(images, 0), images)
    assert (change_stroke_width(images, -1).sum(dim=(1, 2, 3)) < mass).all()
    assert (change_stroke_width(images, 1).sum(dim=(1, 2, 3)) > mass).all()
    assert (change_stroke_width(images, 2).sum(dim=(1, 2, 3)) > change_stroke_width(images, 1).sum(dim=(1, 2, 3))).all()


def test_one_dilation_step_grows_a_dot_into_a_3x3_square_and_one_erosion_removes_it() -> None:
    dot = torch.zeros(1, 1, SIZE, SIZE)
    dot[0, 0, 5, 7] = 1.0
    square = torch.zeros_like(dot)
    square[0, 0, 4:7, 6:9] = 1.0
    torch.testing.assert_close(change_stroke_width(dot, 1), square)
    torch.testing.assert_close(change_stroke_width(square, -1), dot)


def test_half_steps_change_the_ink_between_the_whole_steps() -> None:
    images = digit_like()

    def mass(steps: float) -> torch.Tensor:
        return change_stroke_width(images, steps).sum(dim=(1, 2, 3))

    for lower, middle, upper in ((-1, -0.5, 0), (0, 0.5, 1), (1, 1.5, 2)):
        assert ((mass(lower) < mass(middle)) & (mass(middle) < mass(upper))).all()
    torch.testing.assert_close(mass(0.5), (mass(0) + mass(1)) / 2)


def test_prepare_like_service_sizes_and_centres_each_digit_and_refuses_blank_ones() -> None:
    images = torch.cat([digit_like(2), torch.zeros(1, 1, SIZE, SIZE)])
    prepared, refused = prepare_like_service(images)
    assert prepared.shape == (3, 1, SIZE, SIZE)
    assert refused.tolist() == [False, False, True]
    for image in prepared[:2, 0]:
        rows = torch.nonzero(image.sum(dim=1)).flatten()
        assert int(rows[-1] - rows[0]) + 1 == 20  # MNIST's 20-pixel box
    torch.testing.assert_close(centre_of_mass(prepared[:2]), torch.full((2, 2), 14.0), atol=0.501, rtol=0)
    assert float(prepared[2].abs().sum()) == 0.0


def test_noise_with_sigma_zero_is_the_identity() -> None:
    images = digit_like()
    torch.testing.assert_close(add_gaussian_noise(images, 0.0, torch.Generator().manual_seed(1)), images)


def test_noise_is_fixed_by_the_seed_and_stays_in_range() -> None:
    images = digit_like()
    first = add_gaussian_noise(images, 0.3, torch.Generator().manual_seed(1))
    again = add_gaussian_noise(images, 0.3, torch.Generator().manual_seed(1))
    other = add_gaussian_noise(images, 0.3, torch.Generator().manual_seed(2))
    torch.testing.assert_close(first, again)
    assert not torch.equal(first, other)
    assert first.min() >= 0.0 and first.max() <= 1.0
    # On the black background the clipped noise is max(0, 0.3 z), whose mean is 0.3 / sqrt(2 pi).
    background = (first - images)[images == 0]
    assert abs(float(background.mean()) - 0.3 / math.sqrt(2 * math.pi)) < 0.015


def test_blur_with_sigma_zero_is_the_identity_and_otherwise_keeps_the_ink_mass() -> None:
    images = digit_like()
    torch.testing.assert_close(gaussian_blur(images, 0.0), images)
    blurred = gaussian_blur(images, 1.5)
    torch.testing.assert_close(blurred.sum(dim=(1, 2, 3)), images.sum(dim=(1, 2, 3)), rtol=1e-4, atol=0)
    assert (blurred.amax(dim=(1, 2, 3)) < 1.0).all()
    torch.testing.assert_close(centre_of_mass(blurred), centre_of_mass(images), atol=1e-4, rtol=0)


@pytest.mark.parametrize("sweep", SWEEPS, ids=lambda sweep: sweep.name)
def test_every_corruption_is_the_identity_at_its_clean_level(sweep: Sweep) -> None:
    images = digit_like()
    assert sweep.clean_level in sweep.levels
    clean = sweep.corrupt(images, sweep.clean_level, torch.Generator().manual_seed(0))
    torch.testing.assert_close(clean, images, atol=1e-5, rtol=0)


@pytest.mark.parametrize("sweep", SWEEPS, ids=lambda sweep: sweep.name)
def test_every_sweep_is_deterministic_for_a_seed_and_changes_a_frame_filling_digit(sweep: Sweep) -> None:
    images = digit_like()
    # A stroke from row 2 to row 25: the strongest translation pushes ink out of the frame, which centring cannot undo.
    images[:, 0, 2:26, 14] = 1.0
    strongest = max(sweep.levels, key=lambda level: abs(level - sweep.clean_level))
    first = sweep.apply(images, strongest, torch.Generator().manual_seed(7))
    again = sweep.apply(images, strongest, torch.Generator().manual_seed(7))
    assert first.shape == images.shape
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first, images, atol=1e-3)
