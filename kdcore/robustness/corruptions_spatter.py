"""Spatter (held-out corruption): water drops for severities 1-3, mud for 4-5.

The water branch of make_cifar_c runs OpenCV steps (Canny, distanceTransform, equalizeHist,
filter2D, blur) on a uint8 liquid layer; each is re-done here on batches. Canny's non-maximum
suppression and hysteresis are simplified (see docs/CORRUPTIONS.md); the distance is the exact
Euclidean one where OpenCV's DIST_L2 with a 5x5 mask is a close approximation of it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kdcore.robustness import corruptions_ops as ops
from kdcore.robustness import corruptions_params as P
from kdcore.robustness.corruptions_rng import RngContext

_TAN_22_5 = math.tan(math.radians(22.5))
_TAN_67_5 = math.tan(math.radians(67.5))
_EMBOSS = torch.tensor([[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]])
_BOX3 = torch.full((3, 3), 1.0 / 9.0)


def _shift(a: torch.Tensor, dy: int, dx: int, fill: float) -> torch.Tensor:
    """b[y, x] = a[y + dy, x + dx], `fill` outside."""
    h, w = a.shape[-2:]
    p = F.pad(a, (abs(dx), abs(dx), abs(dy), abs(dy)), value=fill)
    return p[..., abs(dy) + dy : abs(dy) + dy + h, abs(dx) + dx : abs(dx) + dx + w]


def canny(img_u8: torch.Tensor, low: float = 50, high: float = 150) -> torch.Tensor:
    """cv2.Canny(img, 50, 150) on (N, 1, H, W) values 0..255: Sobel 3x3, L1 magnitude, 4-direction
    non-maximum suppression, hysteresis by 8-connected growth from strong edges."""
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    gx = ops.correlate2d(img_u8, sobel, "nearest")
    gy = ops.correlate2d(img_u8, sobel.T.contiguous(), "nearest")
    mag = gx.abs() + gy.abs()
    ax, ay = gx.abs(), gy.abs()
    horizontal = ay < _TAN_22_5 * ax
    vertical = ay > _TAN_67_5 * ax
    s = torch.where(gx * gy > 0, 1, -1)
    n1 = torch.where(horizontal, _shift(mag, 0, -1, 0), _shift(mag, -1, 0, 0))
    n2 = torch.where(horizontal, _shift(mag, 0, 1, 0), _shift(mag, 1, 0, 0))
    d1 = torch.where(s > 0, _shift(mag, -1, -1, 0), _shift(mag, -1, 1, 0))
    d2 = torch.where(s > 0, _shift(mag, 1, 1, 0), _shift(mag, 1, -1, 0))
    diagonal = ~(horizontal | vertical)
    n1, n2 = torch.where(diagonal, d1, n1), torch.where(diagonal, d2, n2)
    local_max = (mag > n1) & (mag >= n2)
    weak = local_max & (mag > low)
    strong = local_max & (mag > high)
    for _ in range(max(img_u8.shape[-2:])):
        grown = weak & (F.max_pool2d(strong.float(), 3, 1, 1) > 0)
        if torch.equal(grown, strong):
            break
        strong = grown | strong
    return strong


def edge_distance(edges: torch.Tensor, cap: float) -> torch.Tensor:
    """Euclidean distance to the nearest edge pixel, capped at `cap` (exact below the cap): the
    separable two-pass squared-distance transform restricted to a window of +-ceil(cap)."""
    reach = math.ceil(cap)
    far = 4.0 * (cap + 1) ** 2
    edge_f = edges.float()
    col = torch.full(edges.shape, far, device=edges.device)
    for dy in range(-reach, reach + 1):
        col = torch.where(_shift(edge_f, dy, 0, 0.0) > 0, col.clamp(max=float(dy * dy)), col)
    sq = col
    for dx in range(-reach, reach + 1):
        sq = torch.minimum(sq, _shift(col, 0, dx, far) + dx * dx)
    return sq.sqrt().clamp(max=cap)


def equalize_hist(img_u8: torch.Tensor) -> torch.Tensor:
    """cv2.equalizeHist per image on integer-valued float (N, 1, H, W)."""
    n = img_u8.shape[0]
    flat = img_u8.reshape(n, -1).to(torch.int64)
    ones = torch.ones_like(flat, dtype=torch.float32)
    hist = torch.zeros(n, 256, device=img_u8.device).scatter_add_(1, flat, ones)
    cdf = hist.cumsum(1)
    first = torch.gather(cdf, 1, (hist > 0).float().argmax(1, keepdim=True))  # count in the lowest used bin
    total = float(flat.shape[1])
    scale = 255.0 / (total - first).clamp_min(1)
    lut = torch.round((cdf - first) * scale).clamp(0, 255)
    out = torch.gather(lut, 1, flat).view_as(img_u8)
    constant = first[:, 0] >= total  # one grey level: OpenCV keeps it
    return torch.where(constant.view(n, 1, 1, 1), img_u8, out)


def spatter(x: torch.Tensor, severity: int, rng: RngContext) -> torch.Tensor:
    loc, scale, sigma, threshold, amount, mud = P.SPATTER[severity - 1]
    n, _, h, w = x.shape
    s = P.spatial_scale(h, w)
    liquid = loc + scale * rng.normal(30, (1, h, w))
    liquid = ops.gaussian_filter(liquid, sigma * s)
    liquid = torch.where(liquid < threshold, 0.0, liquid)
    if mud:
        m = ops.gaussian_filter((liquid > threshold).float(), amount * s)
        m = torch.where(m < 0.8, 0.0, m)
        colour = torch.tensor(P.SPATTER_MUD_RGB, device=x.device, dtype=x.dtype).view(1, 3, 1, 1) / 255
        return x * (1 - m) + colour * m
    liquid_u8 = torch.floor(liquid * 255).clamp(0, 255)
    dist = edge_distance(canny(liquid_u8), P.SPATTER_DIST_TRUNC * s)
    dist = torch.floor(ops.correlate2d(dist, _BOX3, "mirror"))
    dist = equalize_hist(dist)
    dist = torch.round(ops.correlate2d(dist, _EMBOSS, "mirror")).clamp(0, 255)
    dist = torch.round(ops.correlate2d(dist, _BOX3, "mirror"))
    m = liquid_u8 * dist
    m = amount * m / m.amax((2, 3), keepdim=True).clamp_min(1e-12)
    colour = torch.tensor(P.SPATTER_WATER_RGB, device=x.device, dtype=x.dtype).view(1, 3, 1, 1) / 255
    return x + m * colour
