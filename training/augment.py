"""Batched random warps of whole ``(N, 1, H, W)`` image tensors: affine, optional elastic, optional flips, and
optional thinner or bolder strokes.

One ``affine_grid``/``grid_sample`` call warps the whole batch, which on a CPU is far cheaper than per-image
torchvision transforms in a data loader. Images are in ``[0, 1]`` with a black (0) background, so zero padding
fills uncovered pixels with background.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from training.config import AugmentConfig


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def random_affine_matrices(n: int, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """``(n, 2, 3)`` matrices mapping output to input coordinates in ``affine_grid``'s ``[-1, 1]`` frame."""
    angle = torch.deg2rad(_uniform(n, -config.rotation_deg, config.rotation_deg, generator))
    shear = torch.deg2rad(_uniform(n, -config.shear_deg, config.shear_deg, generator))
    scale = _uniform(n, config.scale_min, config.scale_max, generator)
    # A translation of ``frac`` of the image width is ``2 * frac`` in the [-1, 1] frame.
    shift = _uniform(2 * n, -2 * config.translate_frac, 2 * config.translate_frac, generator).view(n, 2)
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    # Rotation times horizontal shear, divided by the scale because the grid maps output pixels back to input.
    theta = torch.empty(n, 2, 3)
    theta[:, 0, 0] = cos / scale
    theta[:, 0, 1] = (cos * tan - sin) / scale
    theta[:, 1, 0] = sin / scale
    theta[:, 1, 1] = (sin * tan + cos) / scale
    theta[:, :, 2] = shift
    return theta


def _gaussian_kernel(sigma_px: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma_px))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * sigma_px**2))
    return kernel / kernel.sum()


def elastic_offsets(n: int, size: int, alpha_px: float, sigma_px: float, generator: torch.Generator) -> torch.Tensor:
    """``(n, size, size, 2)`` smooth random displacements (Simard et al. 2003), in ``[-1, 1]`` grid units."""
    noise = torch.rand(n * 2, 1, size, size, generator=generator) * 2 - 1
    kernel = _gaussian_kernel(sigma_px)
    pad = len(kernel) // 2
    smooth = F.conv2d(F.pad(noise, (pad, pad, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    smooth = F.conv2d(F.pad(smooth, (0, 0, pad, pad), mode="reflect"), kernel.view(1, 1, -1, 1))
    # Normalise the field to unit peak so ``alpha_px`` is the largest displacement in pixels.
    smooth = smooth / smooth.abs().amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    return (smooth.view(n, 2, size, size).permute(0, 2, 3, 1) * alpha_px * 2 / size).contiguous()


def augment_batch(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """A randomly warped copy of ``images`` ``(N, 1, H, W)``; the random draws come from ``generator`` (CPU)."""
    if not config.enabled:
        return images
    n, _, height, width = images.shape
    theta = random_affine_matrices(n, config, generator).to(images.device, images.dtype)
    grid = F.affine_grid(theta, [n, 1, height, width], align_corners=False)
    if config.elastic:
        offsets = elastic_offsets(n, height, config.elastic_alpha_px, config.elastic_sigma_px, generator)
        grid = grid + offsets.to(grid.device, grid.dtype)
    warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if config.hflip:
        flip = (torch.rand(n, generator=generator) < 0.5).to(images.device)
        warped = torch.where(flip.view(n, 1, 1, 1), warped.flip(-1), warped)
    if config.stroke_prob > 0:
        warped = change_strokes(warped, config.stroke_prob, generator)
    return warped


def change_strokes(images: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    """Dilate (bold pen) or erode (thin pen) a random ``probability`` share of ``images`` by one pixel.

    Grey-level morphology with a 3x3 window: a max filter grows every stroke by a pixel on each side, a min filter
    (the max filter of the negated image) thins it; erosion is skipped where it would erase the whole image.
    """
    n = images.shape[0]
    draw = torch.rand(n, generator=generator).to(images.device)
    dilated = F.max_pool2d(images, 3, stride=1, padding=1)
    eroded = -F.max_pool2d(-images, 3, stride=1, padding=1)
    survives = eroded.amax(dim=(1, 2, 3)) > 0.5 * images.amax(dim=(1, 2, 3))
    bold = (draw < probability / 2).view(n, 1, 1, 1)
    thin = ((draw >= probability / 2) & (draw < probability) & survives).view(n, 1, 1, 1)
    return torch.where(bold, dilated, torch.where(thin, eroded, images))
