"""The CORRUPTIONS registry and `corrupt`: CIFAR-10-C-style corruptions computed on batches.

Generated sets are "CIFAR-C-like": the published make_cifar_c formulas and severity tables
(corruptions_params) re-done as batched torch ops; see docs/CORRUPTIONS.md for what is exact.
"""

from __future__ import annotations

import torch

from kdcore.robustness.corruptions_blur import defocus_blur, gaussian_blur, glass_blur, motion_blur, zoom_blur
from kdcore.robustness.corruptions_digital import (
    brightness,
    contrast,
    elastic_transform,
    jpeg_compression,
    pixelate,
    saturate,
)
from kdcore.robustness.corruptions_noise import gaussian_noise, impulse_noise, shot_noise, speckle_noise
from kdcore.robustness.corruptions_ops import CorruptionFn, needs_rgb
from kdcore.robustness.corruptions_rng import RngContext
from kdcore.robustness.corruptions_spatter import spatter
from kdcore.robustness.corruptions_weather import fog, frost, snow
from kdcore.spec import CORRUPTIONS as CORRUPTION_NAMES

# Each fn(x float in [0, 1] (N, C, H, W) with C in {1, 3}, severity 1..5, RngContext) -> float, unclamped.
CORRUPTIONS: dict[str, CorruptionFn] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "zoom_blur": zoom_blur,
    "snow": needs_rgb(snow),
    "frost": needs_rgb(frost),
    "fog": fog,
    "brightness": needs_rgb(brightness),
    "contrast": contrast,
    "elastic_transform": elastic_transform,
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
    "speckle_noise": speckle_noise,
    "gaussian_blur": gaussian_blur,
    "spatter": needs_rgb(spatter),
    "saturate": needs_rgb(saturate),
}
assert tuple(CORRUPTIONS) == CORRUPTION_NAMES, "registry must follow kdcore.spec.CORRUPTIONS"


def corrupt(
    x: torch.Tensor, name: str, severity: int, *, seed: int = 0, indices: torch.Tensor | None = None
) -> torch.Tensor:
    """Corrupt a batch (N, C, H, W), C in {1, 3}, uint8 0..255 or float in [0, 1], on any device.

    Returns the same dtype, shape and device; clamped to the input range, uint8 rounded. Image i
    depends only on (seed, name, severity, indices[i]) (indices default to 0..N-1), not on the batch
    or the device (up to floating-point rounding between devices)."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; expected one of {', '.join(CORRUPTIONS)}")
    if severity not in (1, 2, 3, 4, 5):
        raise ValueError(f"severity must be an integer 1..5, got {severity!r}")
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected an (N, C, H, W) batch with C 1 or 3, got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        xf = x.to(torch.float32) / 255
    elif x.is_floating_point():
        xf = x.to(torch.float32).clamp(0, 1)
    else:
        raise TypeError(f"expected uint8 or floating-point images, got {x.dtype}")
    n = x.shape[0]
    if indices is None:
        indices = torch.arange(n, device=x.device)
    indices = torch.as_tensor(indices, dtype=torch.int64, device=x.device).reshape(-1)
    if indices.numel() != n:
        raise ValueError(f"indices has {indices.numel()} entries for a batch of {n}")
    if n == 0:
        return x.clone()
    rng = RngContext(seed, CORRUPTION_NAMES.index(name), severity, indices)
    out = CORRUPTIONS[name](xf, severity, rng).clamp(0, 1)
    if x.dtype == torch.uint8:
        return torch.round(out * 255).to(torch.uint8)
    return out.to(x.dtype)
