"""Digital corruptions: brightness, contrast, saturate, elastic_transform, pixelate, jpeg_compression."""

from __future__ import annotations

import functools
import io
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from kdcore.robustness import corruptions_ops as ops
from kdcore.robustness import corruptions_params as P
from kdcore.robustness.corruptions_rng import RngContext


def contrast(x: torch.Tensor, severity: int, rng: RngContext) -> torch.Tensor:
    c = P.CONTRAST[severity - 1]
    means = x.mean((2, 3), keepdim=True)
    return (x - means) * c + means


def brightness(x: torch.Tensor, severity: int, rng: RngContext) -> torch.Tensor:
    """HSV V += c. With H and S fixed, hsv2rgb is linear in V, so the pixel is scaled by V' / V
    (a black pixel, S = 0, becomes grey V')."""
    v = x.amax(1, keepdim=True)
    v_new = (v + P.BRIGHTNESS[severity - 1]).clamp(0, 1)
    return torch.where(v > 0, x * (v_new / v.clamp_min(1e-12)), v_new)


def saturate(x: torch.Tensor, severity: int, rng: RngContext) -> torch.Tensor:
    scale, shift = P.SATURATE[severity - 1]
    hsv = ops.rgb_to_hsv(x)
    hsv[:, 1] = (hsv[:, 1] * scale + shift).clamp(0, 1)
    return ops.hsv_to_rgb(hsv)


@functools.lru_cache(maxsize=64)
def pil_box_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """(out, in) weights of Pillow's BOX resampling (filter support 0.5 scaled by the ratio; a source
    pixel counts fully when its centre falls inside the output pixel's box)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    weights = np.zeros((out_size, in_size))
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        for src in range(lo, hi):
            t = (src - center + 0.5) / filterscale
            weights[xx, src] = 1.0 if -0.5 < t <= 0.5 else 0.0
        weights[xx] /= weights[xx].sum()
    return torch.tensor(weights, dtype=torch.float32)


def pil_box_resize(x255: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Pillow's BOX resize on 0..255 values: horizontal pass, then vertical, each rounded to 8 bits."""
    h, w = x255.shape[-2:]
    mw = pil_box_matrix(w, out_w).to(x255.device, x255.dtype)
    mh = pil_box_matrix(h, out_h).to(x255.device, x255.dtype)
    x255 = torch.round(x255 @ mw.T) if out_w != w else x255
    return torch.round(mh @ x255) if out_h != h else x255


def pixelate(x: torch.Tensor, severity: int, rng: RngContext) -> torch.Tensor:
    c = P.PIXELATE[severity - 1]
    h, w = x.shape[-2:]
    small = pil_box_resize(torch.round(x * 255), max(1, int(h * c)), max(1, int(w * c)))
    return pil_box_resize(small, h, w) / 255


def _jpeg_pil(x8: np.ndarray, quality: int) -> np.ndarray:
    """Pillow, one (H, W, C) uint8 image at a time: the reference codec."""
    out = np.empty_like(x8)
    for i, img in enumerate(x8):
        buf = io.BytesIO()
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(buf, "JPEG", quality=quality)
        buf.seek(0)
        out[i] = np.asarray(Image.open(buf)).reshape(img.shape)
    return out


def jpeg_compression(x: torch.Tensor, severity: int, rng: RngContext) -> torch.Tensor:
    """JPEG at the published quality on the CPU. torchvision's libjpeg-turbo codes the whole list in
    one call and gives the same pixels as Pillow (the reference; compared in the fidelity tests);
    its image codecs are deprecated since torchvision 0.29, so Pillow is the fallback when they go.
    A grey image is coded as a one-channel JPEG."""
    quality = P.JPEG_QUALITY[severity - 1]
    x8 = torch.round(x * 255).clamp(0, 255).to("cpu", torch.uint8)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from torchvision.io import decode_jpeg, encode_jpeg

            out = torch.stack(decode_jpeg(encode_jpeg(list(x8), quality=quality)))
    except (ImportError, AttributeError, RuntimeError):
        out = torch.from_numpy(_jpeg_pil(x8.permute(0, 2, 3, 1).numpy(), quality)).permute(0, 3, 1, 2)
    return out.to(x.device, x.dtype) / 255


def elastic_transform(x: torch.Tensor, severity: int, rng: RngContext) -> torch.Tensor:
    """A random affine warp (3 jittered points, cv2.warpAffine: bilinear, reflect-101 border), then a
    Gaussian-smoothed random displacement field (scipy map_coordinates order 1, 'reflect' border).
    Parameters are fractions of the image size (make_cifar_c writes them as IMSIZE * f)."""
    n, c, h, w = x.shape
    size = min(h, w)
    alpha, sigma, jitter = (f * size for f in P.ELASTIC[severity - 1])
    dev, dt = x.device, x.dtype
    cx, cy, sq = float(w // 2), float(h // 2), float(size // 3)
    pts1 = torch.tensor([[cx + sq, cy + sq], [cx + sq, cy - sq], [cx - sq, cy - sq]], device=dev)
    pts2 = pts1 + rng.uniform_range(70, (3, 2), -jitter, jitter)
    # inverse map (output -> source) sends pts2 to pts1
    ones = torch.ones(n, 3, 1, device=dev)
    inv_t = torch.linalg.solve(torch.cat([pts2, ones], 2).double(), pts1.expand(n, 3, 2).double()).float()
    ys, xs = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
    grid_h = torch.stack([xs, ys, torch.ones_like(xs)], -1).float().view(1, h * w, 3)
    src = (grid_h @ inv_t).view(n, h, w, 2)
    norm = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], device=dev)
    affine_grid = (src * norm - 1).to(dt)
    x = F.grid_sample(x, affine_grid, mode="bilinear", padding_mode="reflection", align_corners=True)
    dx = ops.gaussian_filter(rng.uniform_range(71, (1, h, w), -1, 1), sigma, "reflect", 3.0) * alpha
    dy = ops.gaussian_filter(rng.uniform_range(72, (1, h, w), -1, 1), sigma, "reflect", 3.0) * alpha
    gx = (2 * (xs + dx[:, 0]) + 1) / w - 1
    gy = (2 * (ys + dy[:, 0]) + 1) / h - 1
    grid = torch.stack([gx, gy], -1).to(dt)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
