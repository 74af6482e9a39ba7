"""Noise corruptions (make_cifar_c formulas; parameters in corruptions_params)."""

from __future__ import annotations

import torch

from kdcore.robustness import corruptions_params as P
from kdcore.robustness.corruptions_rng import RngContext


def gaussian_noise(x: torch.Tensor, severity: int, rng: RngContext) -> torch.Tensor:
    c = P.GAUSSIAN_NOISE[severity - 1]
    return x + c * rng.normal(1, tuple(x.shape[1:]))


def shot_noise(x: torch.Tensor, severity: int, rng: RngContext) -> torch.Tensor:
    """Poisson(x c) / c. Exact Poisson draws come from torch.poisson with one CPU generator per image,
    seeded from the hash: that keeps images independent of batch and device (a CUDA input is
    sampled on the CPU and moved back)."""
    c = P.SHOT_NOISE[severity - 1]
    rates = (x * c).to("cpu", torch.float32)
    draws = [torch.poisson(r, generator=g) for r, g in zip(rates, rng.generators(2), strict=True)]
    counts = torch.stack(draws)
    return counts.to(x.device, x.dtype) / c


def impulse_noise(x: torch.Tensor, severity: int, rng: RngContext) -> torch.Tensor:
    """skimage random_noise(mode='s&p', amount=c): each value is hit with probability c, then set to
    1 or 0 with equal probability."""
    c = P.IMPULSE_NOISE[severity - 1]
    shape = tuple(x.shape[1:])
    bits = rng.bits(3, shape)  # top 24 bits decide the hit, the lowest bit salt or pepper
    hit = ((bits >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24)) < c
    salt = (bits & 1) == 1
    return torch.where(hit, salt.to(x.dtype), x)


def speckle_noise(x: torch.Tensor, severity: int, rng: RngContext) -> torch.Tensor:
    c = P.SPECKLE_NOISE[severity - 1]
    return x + x * (c * rng.normal(5, tuple(x.shape[1:])))
