"""Weather corruptions: snow, frost, fog (spatter lives in corruptions_spatter)."""

from __future__ import annotations

import torch

from kdcore.robustness import corruptions_ops as ops
from kdcore.robustness import corruptions_params as P
from kdcore.robustness.corruptions_rng import RngContext

FROST_TINT = (0.81, 0.93, 1.0)  # R and G relative to B in the five published frost crops


def snow(x: torch.Tensor, severity: int, rng: RngContext) -> torch.Tensor:
    loc, scale, zoom, threshold, radius, sigma, blend = P.SNOW[severity - 1]
    n, _, h, w = x.shape
    s = P.spatial_scale(h, w)
    layer = loc + scale * rng.normal(40, (1, h, w))
    layer = ops.clipped_zoom(layer, zoom)
    layer = torch.where(layer < threshold, 0.0, layer)
    layer = torch.floor(layer.clamp(0, 1) * 255) / 255  # the layer is saved as an 8-bit PNG
    angles = rng.uniform_range(41, (), *P.SNOW_ANGLE)
    layer = torch.round(ops.motion_blur(layer, radius * s, sigma * s, angles) * 255) / 255
    x = blend * x + (1 - blend) * torch.maximum(x, ops.to_gray(x) * 1.5 + 0.5)
    return x + layer + torch.rot90(layer, 2, (2, 3))


def frost_texture(rng: RngContext, h: int, w: int) -> torch.Tensor:
    """Procedural stand-in for the frost photographs (which we cannot ship): a per-image level, a
    rough plasma haze and thin bright ridges (|2 p - 1| near 0) for ice crystals, tinted bluish white.
    (N, 3, H, W) in [0, 1]. Calibrated to the five photographs make_cifar_c draws from (resized by
    0.2): channel means about (0.57, 0.66, 0.70), spread within a crop about 0.09."""
    size = ops.next_power_of_two(max(h, w))
    level = rng.uniform_range(50, (1, 1), 0.5, 0.8)
    haze = ops.plasma_fractal(rng, 51, size, 1.6)[:, :h, :w]
    veins = 1 - (2 * ops.plasma_fractal(rng, 52, size, 1.4)[:, :h, :w] - 1).abs()
    texture = (level + 0.3 * (haze - 0.5) + 0.35 * (veins**6 - 0.1)).clamp(0, 1)
    tint = torch.tensor(FROST_TINT, device=texture.device).view(1, 3, 1, 1)
    return texture[:, None] * tint


def frost(x: torch.Tensor, severity: int, rng: RngContext) -> torch.Tensor:
    image_weight, frost_weight = P.FROST[severity - 1]
    texture = frost_texture(rng, *x.shape[-2:]).to(x.dtype)
    return image_weight * x + frost_weight * texture


def fog(x: torch.Tensor, severity: int, rng: RngContext) -> torch.Tensor:
    """x + a plasma, rescaled by max / (max + a). The plasma map is next_power_of_two(max(H, W)) wide
    (32 for CIFAR, as published) and cropped to the image."""
    strength, decay = P.FOG[severity - 1]
    h, w = x.shape[-2:]
    size = ops.next_power_of_two(max(h, w))
    plasma = ops.plasma_fractal(rng, 60, size, decay)[:, None, :h, :w].to(x.dtype)
    max_val = x.amax((1, 2, 3), keepdim=True)
    return (x + strength * plasma) * max_val / (max_val + strength)
