"""Blur corruptions (make_cifar_c formulas; parameters in corruptions_params)."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from kdcore.robustness import corruptions_ops as ops
from kdcore.robustness import corruptions_params as P
from kdcore.robustness.corruptions_rng import RngContext


def gaussian_blur(x: torch.Tensor, severity: int, rng: RngContext) -> torch.Tensor:
    sigma = P.GAUSSIAN_BLUR[severity - 1] * P.spatial_scale(*x.shape[-2:])
    return ops.gaussian_filter(x, sigma)


@functools.lru_cache(maxsize=64)
def disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """make_cifar_c's disk(): an aliased disk on a 17 x 17 grid (wider for radius > 8), normalised,
    then cv2.GaussianBlur(ksize 3, or 5 when wide; sigma alias_blur; reflect-101 border). Rows and
    columns that stay exactly zero are cropped (they do not change the convolution)."""
    if radius <= 8:
        half, ksize = 8, 3
    else:
        half, ksize = math.ceil(radius), 5
    grid = torch.arange(-half, half + 1, dtype=torch.float32)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    disk = (xx**2 + yy**2 <= radius**2).to(torch.float32)
    disk = disk / disk.sum()
    t = torch.arange(ksize, dtype=torch.float64) - ksize // 2
    g = torch.exp(-(t**2) / (2 * alias_blur**2))
    g = (g / g.sum()).to(torch.float32)
    kernel = ops.correlate2d(disk[None, None], g[:, None] * g[None, :], "mirror")[0, 0]
    rows = torch.nonzero(kernel.abs().sum(1) > 0).flatten()
    cols = torch.nonzero(kernel.abs().sum(0) > 0).flatten()
    r = int(max(half - rows.min(), rows.max() - half))
    q = int(max(half - cols.min(), cols.max() - half))
    return kernel[half - r : half + r + 1, half - q : half + q + 1].contiguous()


def defocus_blur(x: torch.Tensor, severity: int, rng: RngContext) -> torch.Tensor:
    radius, alias_blur = P.DEFOCUS_BLUR[severity - 1]
    s = P.spatial_scale(*x.shape[-2:])
    return ops.correlate2d(x, disk_kernel(radius * s, alias_blur * s), "mirror")


def glass_blur(x: torch.Tensor, severity: int, rng: RngContext) -> torch.Tensor:
    """Gaussian blur, cast to uint8 (truncating, as np.uint8), local pixel moves, blur again.

    The published loop runs h, w from H - d down to d + 1 and does `x[h, w], x[h', w'] = x[h', w'],
    x[h, w]` with (dy, dx) = randint(-d, d). On numpy pixel views that statement copies x[h', w'] into
    x[h, w] and leaves x[h', w'] as it was, and with d = 1 the source (up/left of h, w) is never
    written before it is read. So the sequential loop equals one parallel gather from the previous
    iteration's image, done here. (For d >= 2, images of 48 px or more, sources below/right may have
    been written first in the original; the gather reads the unwritten value: documented difference.)"""
    sigma, delta, iterations = P.GLASS_BLUR[severity - 1]
    h, w = x.shape[-2:]
    s = P.spatial_scale(h, w)
    sigma, delta = sigma * s, max(1, round(delta * s))
    x = torch.floor(ops.gaussian_filter(x, sigma) * 255) / 255
    n, c = x.shape[:2]
    rows = torch.arange(h, device=x.device)[:, None].expand(h, w)
    cols = torch.arange(w, device=x.device)[None, :].expand(h, w)
    inside = (rows > delta) & (rows <= h - delta) & (cols > delta) & (cols <= w - delta)
    for it in range(iterations):
        dy = rng.randint(10 + 2 * it, (h, w), -delta, delta)
        dx = rng.randint(11 + 2 * it, (h, w), -delta, delta)
        src_r = torch.where(inside, rows + dy, rows)
        src_c = torch.where(inside, cols + dx, cols)
        flat = (src_r * w + src_c).view(n, 1, h * w).expand(n, c, h * w)
        x = x.reshape(n, c, h * w).gather(2, flat).view(n, c, h, w)
    return ops.gaussian_filter(x, sigma)


def motion_blur(x: torch.Tensor, severity: int, rng: RngContext) -> torch.Tensor:
    radius, sigma = P.MOTION_BLUR[severity - 1]
    s = P.spatial_scale(*x.shape[-2:])
    angles = rng.uniform_range(20, (), *P.MOTION_BLUR_ANGLE)
    return ops.motion_blur(x, radius * s, sigma * s, angles)


def zoom_factors(severity: int) -> list[float]:
    return np.arange(1, P.ZOOM_BLUR_TOP[severity - 1], P.ZOOM_BLUR_STEP).tolist()


def zoom_blur(x: torch.Tensor, severity: int, rng: RngContext) -> torch.Tensor:
    """Mean of the image and its centre zooms by 1, 1.01, ... (zoom factors do not depend on size)."""
    factors = zoom_factors(severity)
    return (x + ops.zoom_sum(x, factors)) / (len(factors) + 1)
