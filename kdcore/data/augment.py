"""Training augmentations on whole batches on the training device (no per-image Python).

Random numbers are drawn on the CPU from the caller's torch.Generator and then moved to the
device, so a batch's augmentation depends only on that generator's state, on any device.

standard: a random crop after zero padding of `crop_padding(size)` pixels (4 for 32 px and up; for
smaller images max(1, size // 8), e.g. 1 px for the 8x8 digits) plus, when `flip` is on, a random
horizontal flip, both done by one gather per batch. The caller resolves `flip` from the data set
(kdcore.spec.resolve_flip: off for digits, where a mirror changes the class).

augmix (Hendrycks et al., ICLR 2020; reference: google-research/augmix augmentations.py): per image,
3 chains of 1-3 ops drawn from {autocontrast, equalize, posterize, rotate, solarize, shear_x, shear_y,
translate_x, translate_y}, each op with its own level ~ U(0.1, severity=3) and a random sign, the
chains mixed with Dirichlet(1) weights and the mix blended with the original by m ~ Beta(1, 1).
Known differences from the reference, which works per PIL image:
- geometric ops use torch grid_sample (bilinear, zero fill) instead of PIL's affine resampling, so
  edge pixels differ slightly; pixel centres follow PIL's convention;
- translate uses up to size/3 pixels of the actual image size (the reference hard-codes 32 px);
- the chains mix on the [0, 1] scale before normalisation; the reference mixes normalised tensors,
  which is the same result because the weights sum to 1 and normalisation is affine;
- the output is float [0, 1] (not re-quantised to uint8), as in the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

AUGMIX_OPS = (
    "autocontrast", "equalize", "posterize", "rotate", "solarize",
    "shear_x", "shear_y", "translate_x", "translate_y",
)
GEOMETRIC_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")


def crop_padding(size: int) -> int:
    """Zero padding of the random crop: 4 px as in the CIFAR recipes, less for tiny images."""
    return min(4, max(1, size // 8))


def crop_flip(x: torch.Tensor, offset_y: torch.Tensor, offset_x: torch.Tensor, flip: torch.Tensor,
              pad: int) -> torch.Tensor:
    """Crop image i of the zero-padded batch at (offset_y[i], offset_x[i]) in [0, 2*pad] and mirror
    it left-right where flip[i]; one advanced-indexing gather for the whole batch."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    cols = torch.arange(w, device=x.device).expand(b, w)
    cols = torch.where(flip[:, None], w - 1 - cols, cols) + offset_x[:, None]
    rows = torch.arange(h, device=x.device)[None, :] + offset_y[:, None]
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def standard_augment(x: torch.Tensor, generator: torch.Generator, *, flip: bool) -> torch.Tensor:
    """Random crop (zero padding) + random horizontal flip (if `flip`) of a uint8 batch (N, C, H, W)."""
    b, _, h, w = x.shape
    pad = crop_padding(min(h, w))
    offsets = torch.randint(0, 2 * pad + 1, (2, b), generator=generator).to(x.device)
    # Drawn either way, so the generator's later draws (AugMix) do not depend on the flip setting.
    mirror = (torch.rand(b, generator=generator) < 0.5) & flip
    return crop_flip(x, offsets[0], offsets[1], mirror.to(x.device), pad)


def _op(name: str) -> int:
    return AUGMIX_OPS.index(name)


def _affine_theta(code: torch.Tensor, level: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """affine_grid thetas (N, 2, 3) for op codes and signed levels (severity units), built from
    PIL-style pixel matrices that map output to input pixel coordinates (pixel centres at i + 0.5)."""
    mag, sign = level.abs().double(), level.sign().double()
    # The reference's magnitudes: int(level * 30 / 10) degrees, level * 0.3 / 10 shear,
    # int(level * (size / 3) / 10) pixels of translation; each with a random sign.
    degrees = sign * torch.floor(mag * 3) * (code == _op("rotate"))
    m = torch.eye(3, dtype=torch.float64).repeat(len(code), 1, 1)
    m[:, 0, 1] = sign * mag * 0.03 * (code == _op("shear_x"))
    m[:, 1, 0] = sign * mag * 0.03 * (code == _op("shear_y"))
    m[:, 0, 2] = sign * torch.floor(mag * w / 30) * (code == _op("translate_x"))
    m[:, 1, 2] = sign * torch.floor(mag * h / 30) * (code == _op("translate_y"))
    # Rotation about the centre, counter-clockwise for positive degrees (as PIL's Image.rotate).
    a = -torch.deg2rad(degrees)
    cos, sin = torch.cos(a), torch.sin(a)
    cx, cy = w / 2, h / 2
    rot = torch.stack([
        torch.stack([cos, sin, cx - cos * cx - sin * cy], 1),
        torch.stack([-sin, cos, cy + sin * cx - cos * cy], 1),
    ], 1)
    is_rot = (code == _op("rotate"))[:, None, None]
    m[:, :2] = torch.where(is_rot, rot, m[:, :2])
    # normalised [-1, 1] (align_corners=False) -> pixel coordinates
    to_pixel = torch.tensor([[w / 2, 0, w / 2], [0, h / 2, h / 2], [0, 0, 1]], dtype=torch.float64)
    theta = torch.linalg.inv(to_pixel) @ m @ to_pixel
    return theta[:, :2].float()


def _apply_ops(x: torch.Tensor, code: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Apply op AUGMIX_OPS[code[i]] with signed level[i] to image i of a uint8 batch; code -1 = none.

    Each image gets at most one op, so the ops run one after another on the whole batch with
    identity parameters (8 bits, threshold 256, identity matrix) or a torch.where for the images
    that did not draw them; only equalize runs on its gathered group (it is the costly one).
    """
    device = x.device
    mag = level.abs()

    def drew(name: str) -> torch.Tensor:
        return (code == _op(name)).to(device)[:, None, None, None]

    # posterize: keep 4 - int(level * 4 / 10) bits; solarize: invert at or above 256 - int(level * 25.6)
    bits = torch.where(code == _op("posterize"), 4 - (mag * 4 / 10).long(), 8)
    keep = ((0xFF << (8 - bits)) & 0xFF).to(torch.uint8).to(device)
    out = x & keep[:, None, None, None]
    threshold = torch.where(code == _op("solarize"), 256 - (mag * 256 / 10).long(), 256).to(device)
    out = torch.where(out.long() >= threshold[:, None, None, None], 255 - out, out)
    out = torch.where(drew("autocontrast"), TF.autocontrast(out), out)
    equalize = torch.nonzero(code == _op("equalize")).squeeze(1).to(device)
    if len(equalize):
        out[equalize] = TF.equalize(out[equalize])
    geometric = torch.isin(code, torch.tensor([_op(name) for name in GEOMETRIC_OPS]))
    if bool(geometric.any()):
        h, w = x.shape[-2:]
        theta = _affine_theta(code, level, h, w).to(device)  # identity for the other images
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        moved = F.grid_sample(out.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        moved = moved.round_().clamp_(0, 255).to(torch.uint8)
        out = torch.where(geometric.to(device)[:, None, None, None], moved, out)
    return out


def augmix(x: torch.Tensor, generator: torch.Generator, *, severity: int = 3, width: int = 3,
           max_depth: int = 3) -> torch.Tensor:
    """AugMix of a uint8 batch (N, C, H, W) -> float32 in [0, 1], same shape and device."""
    n = x.shape[0]
    # Dirichlet(1) = normalised Exp(1) draws; Beta(1, 1) = U(0, 1); both from the caller's generator.
    exp = -torch.log1p(-torch.rand(n, width, generator=generator, dtype=torch.float64))
    weights = (exp / exp.sum(1, keepdim=True)).float().to(x.device)
    m = torch.rand(n, generator=generator).to(x.device)
    depth = torch.randint(1, max_depth + 1, (width, n), generator=generator)
    code = torch.randint(0, len(AUGMIX_OPS), (width, max_depth, n), generator=generator)
    level = torch.empty(width, max_depth, n).uniform_(0.1, severity, generator=generator)
    sign = torch.where(torch.rand(width, max_depth, n, generator=generator) < 0.5, -1.0, 1.0)
    mix = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    for chain in range(width):
        image = x
        for step in range(max_depth):
            active = depth[chain] > step  # chains shorter than max_depth skip the later steps
            step_code = torch.where(active, code[chain, step], -1)
            image = _apply_ops(image, step_code, level[chain, step] * sign[chain, step])
        mix += weights[:, chain, None, None, None] * image.float()
    m = m[:, None, None, None]
    return ((1 - m) * x.float() + m * mix).div_(255.0)
