"""Image corruptions for the robustness curves: batched, pure functions of ``(N, 1, H, W)`` tensors in ``[0, 1]``.

Geometric warps act about each image's centre of mass, so a rotation or scaling does not also shift the digit.
:data:`SWEEPS` lists the curves the comparison report draws: one corruption at increasing strength, optionally
followed by the service's own preprocessing; random choices come from the generator given, so a seed fixes a curve.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from contract import IMAGE_SIZE
from imaging.decoding import DecodeLimits
from imaging.digit import center_by_mass, crop_to_content, grey_png, prepare_digit
from imaging.errors import ImagingError, NoDigitFoundError

# A Gaussian kernel is cut at this many standard deviations: the tail beyond holds under 0.3 % of its mass.
_KERNEL_SIGMAS = 3.0
# One erosion or dilation step is a 3x3 min or max filter: each stroke grows or shrinks by a pixel on every side.
_MORPH_KERNEL = 3
# The four directions of a translation: right, left, down, up (x, y in pixels).
_DIRECTIONS = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])


def centre_of_mass(images: torch.Tensor) -> torch.Tensor:
    """``(N, 2)`` ink centroids as (x, y) pixel indices; an empty image gives the frame's centre."""
    _, _, height, width = images.shape
    mass = images.sum(dim=(1, 2, 3))  # (N,)
    rows = torch.arange(height, dtype=images.dtype, device=images.device)
    cols = torch.arange(width, dtype=images.dtype, device=images.device)
    y = (images.sum(dim=(1, 3)) @ rows) / mass.clamp_min(1e-12)
    x = (images.sum(dim=(1, 2)) @ cols) / mass.clamp_min(1e-12)
    centre = torch.stack((x, y), dim=1)
    frame_centre = torch.tensor([(width - 1) / 2, (height - 1) / 2], dtype=images.dtype, device=images.device)
    return torch.where((mass > 0).unsqueeze(1), centre, frame_centre)


def warp_about_mass(images: torch.Tensor, linear: torch.Tensor, shift_px: torch.Tensor | None = None) -> torch.Tensor:
    """Apply ``linear`` ``(N, 2, 2)`` about each centre of mass, then move by ``shift_px`` ``(N, 2)`` (x, y).

    ``linear`` maps where ink is to where it goes, in (x, y) pixel units. Sampling is bilinear with a black
    border, so an identity warp returns the input and a whole-pixel shift moves pixels without blurring them.
    """
    n, _, height, width = images.shape
    if height != width:
        raise ValueError("warps expect square images")
    shift = torch.zeros(n, 2, dtype=images.dtype) if shift_px is None else shift_px.to(images.dtype)
    centre = centre_of_mass(images).cpu()
    # affine_grid works in [-1, 1] with align_corners=False: pixel index i sits at (2 i + 1) / size - 1.
    scale = 2.0 / width
    centre_norm = (centre + 0.5) * scale - 1.0
    inverse = torch.linalg.inv(linear.to(images.dtype).cpu())  # output position -> input position
    # input = inverse @ (output - centre - shift) + centre
    offset = centre_norm - (inverse @ (centre_norm + shift * scale).unsqueeze(2)).squeeze(2)
    theta = torch.cat((inverse, offset.unsqueeze(2)), dim=2).to(images.device)  # (N, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rotate(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image by ``degrees`` ``(N,)`` (positive: clockwise on screen) about its centre of mass."""
    radians = torch.deg2rad(degrees.to(torch.float64))
    cos, sin = torch.cos(radians), torch.sin(radians)
    # With y pointing down, this matrix turns the image clockwise as displayed.
    linear = torch.stack((torch.stack((cos, -sin), dim=1), torch.stack((sin, cos), dim=1)), dim=1)
    return warp_about_mass(images, linear)


def scale(images: torch.Tensor, factor: float) -> torch.Tensor:
    """Enlarge (``factor`` > 1) or shrink each digit about its centre of mass."""
    linear = torch.eye(2, dtype=torch.float64).repeat(len(images), 1, 1) * factor
    return warp_about_mass(images, linear)


def translate(images: torch.Tensor, shift_px: torch.Tensor) -> torch.Tensor:
    """Move each image by ``shift_px`` ``(N, 2)`` (x right, y down); ink pushed past the border is lost."""
    identity = torch.eye(2, dtype=torch.float64).repeat(len(images), 1, 1)
    return warp_about_mass(images, identity, shift_px)


def recentre(images: torch.Tensor) -> torch.Tensor:
    """The service's own centring (:func:`imaging.digit.center_by_mass` of the cropped ink), per image.

    Blank images pass through unchanged: the service would refuse them, and here they simply count as errors.
    """
    frames = images.detach().cpu().numpy()
    centred = []
    for frame in frames:
        try:
            centred.append(center_by_mass(crop_to_content(frame[0]), size_pixels=frame.shape[-1]))
        except NoDigitFoundError:
            centred.append(frame[0])
    return torch.from_numpy(np.stack(centred)).unsqueeze(1).to(images.device, images.dtype)


def prepare_like_service(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image sent as a PNG through :func:`imaging.digit.prepare_digit`, exactly as an upload is.

    Returns the ``(N, 1, 28, 28)`` model inputs and an ``(N,)`` mask of the images the service refuses (no digit
    found); those get a blank input, so they count as errors.
    """
    limits = DecodeLimits(max_image_pixels=images.shape[-2] * images.shape[-1])
    prepared = torch.zeros(len(images), 1, IMAGE_SIZE, IMAGE_SIZE)
    refused = torch.zeros(len(images), dtype=torch.bool)
    for index, image in enumerate(images):
        try:
            upload = grey_png(image[0].detach().cpu().clamp(0.0, 1.0).numpy())
            prepared[index] = torch.from_numpy(prepare_digit(upload, limits).pixels)
        except ImagingError:
            refused[index] = True
    return prepared.to(images.device), refused


def _prepared(images: torch.Tensor) -> torch.Tensor:
    return prepare_like_service(images)[0]


def dilate(images: torch.Tensor, steps: int) -> torch.Tensor:
    """Grey-level dilation by ``steps`` 3x3 max filters: strokes thicken by ``steps`` pixels on each side."""
    for _ in range(steps):
        images = F.max_pool2d(images, _MORPH_KERNEL, stride=1, padding=_MORPH_KERNEL // 2)
    return images


def erode(images: torch.Tensor, steps: int) -> torch.Tensor:
    """Grey-level erosion by ``steps`` 3x3 min filters: strokes thin by ``steps`` pixels on each side."""
    # A min filter is a max filter of the negated image; max_pool2d pads with -inf, so the border stays neutral.
    return -dilate(-images, steps)


def change_stroke_width(images: torch.Tensor, steps: float) -> torch.Tensor:
    """Dilate for positive ``steps``, erode for negative ones, identity at zero.

    A fractional step blends the nearest whole steps: on anti-aliased strokes that is a sub-pixel width change.
    """
    morph = dilate if steps >= 0 else erode
    whole = math.floor(abs(steps))
    fraction = abs(steps) - whole
    base = morph(images, whole)
    return base if fraction == 0 else torch.lerp(base, morph(base, 1), fraction)


def add_gaussian_noise(images: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Add white noise of standard deviation ``sigma`` (in units of full ink), clipped back to ``[0, 1]``."""
    noise = torch.randn(images.shape, generator=generator).to(images.device, images.dtype)
    return (images + sigma * noise).clamp(0.0, 1.0)


def gaussian_blur(images: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian blur of standard deviation ``sigma_px`` pixels; zero is the identity."""
    if sigma_px <= 0:
        return images
    radius = max(1, math.ceil(_KERNEL_SIGMAS * sigma_px))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(x**2) / (2 * sigma_px**2))
    kernel = kernel / kernel.sum()
    # Zero padding is the black background continuing past the frame.
    rows = F.conv2d(images, kernel.view(1, 1, 1, -1), padding=(0, radius))
    return F.conv2d(rows, kernel.view(1, 1, -1, 1), padding=(radius, 0))


def random_signs(n: int, generator: torch.Generator) -> torch.Tensor:
    """``(n,)`` of +1 and -1 with equal probability."""
    return torch.randint(0, 2, (n,), generator=generator).double() * 2 - 1


def random_directions(n: int, generator: torch.Generator) -> torch.Tensor:
    """``(n, 2)`` unit steps, each right, left, down or up with equal probability."""
    return _DIRECTIONS[torch.randint(0, len(_DIRECTIONS), (n,), generator=generator)]


Corruption = Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class Sweep:
    """One robustness curve: :meth:`apply` at each of ``levels``.

    ``corrupt(images, level, generator)`` is the identity at ``clean_level``; ``then``, when set, is what the
    service does to the corrupted image before a model sees it. Callers pass a generator seeded the same way at
    every level, so each image keeps its direction (or noise pattern) and only the strength changes.
    """

    name: str
    title: str
    unit: str
    levels: tuple[float, ...]
    clean_level: float
    corrupt: Corruption
    then: Callable[[torch.Tensor], torch.Tensor] | None = None

    def apply(self, images: torch.Tensor, level: float, generator: torch.Generator) -> torch.Tensor:
        corrupted = self.corrupt(images, level, generator)
        return corrupted if self.then is None else self.then(corrupted)


def _rotation(images: torch.Tensor, degrees: float, generator: torch.Generator) -> torch.Tensor:
    return rotate(images, degrees * random_signs(len(images), generator))


def _translation(images: torch.Tensor, pixels: float, generator: torch.Generator) -> torch.Tensor:
    return translate(images, pixels * random_directions(len(images), generator))


def _scaling(images: torch.Tensor, factor: float, _generator: torch.Generator) -> torch.Tensor:
    return scale(images, factor)


def _stroke(images: torch.Tensor, steps: float, _generator: torch.Generator) -> torch.Tensor:
    return change_stroke_width(images, steps)


def _blur(images: torch.Tensor, sigma_px: float, _generator: torch.Generator) -> torch.Tensor:
    return gaussian_blur(images, sigma_px)


_SHIFTS_PX = (0, 1, 2, 3, 4, 5, 6)
_NOISE_SIGMAS = (0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
# Levels run from clean to clearly out of distribution. MNIST digits fill a 20-pixel box in a 28-pixel frame, so
# a shift beyond 4 pixels or a scale beyond 1.4 starts to cut ink off at the border; MNIST strokes are 2-4 pixels
# wide, so two erosion steps erase most of them.
SWEEPS: tuple[Sweep, ...] = (
    Sweep("rotation", "rotation (random sign)", "degrees", (0, 5, 10, 15, 20, 25, 30, 35, 40, 45), 0, _rotation),
    Sweep("translation", "translation, no centring", "pixels", _SHIFTS_PX, 0, _translation),
    Sweep(
        "translation_recentred",
        "translation, then the service's centring",
        "pixels",
        _SHIFTS_PX,
        0,
        _translation,
        then=recentre,
    ),
    Sweep(
        "scale",
        "scale about the centre of mass",
        "factor",
        (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4),
        1.0,
        _scaling,
    ),
    Sweep(
        "stroke",
        "stroke width (erosion < 0 < dilation)",
        "pixels per side",
        (-1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 2.5, 3),
        0,
        _stroke,
    ),
    Sweep("noise", "Gaussian noise", "sigma (full ink = 1)", _NOISE_SIGMAS, 0, add_gaussian_noise),
    Sweep(
        "noise_preprocessed",
        "Gaussian noise, then the service's preprocessing",
        "sigma (full ink = 1)",
        _NOISE_SIGMAS,
        0,
        add_gaussian_noise,
        then=_prepared,
    ),
    Sweep("blur", "Gaussian blur", "sigma (pixels)", (0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0), 0, _blur),
)
