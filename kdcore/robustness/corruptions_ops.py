"""Batched building blocks shared by the corruptions (all NCHW float tensors, any device)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from kdcore.robustness.corruptions_rng import RngContext

CorruptionFn = Callable[[torch.Tensor, int, RngContext], torch.Tensor]
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601: PIL "L", cv2 RGB2GRAY


def pad_index(length: int, pad: int, mode: str, device: torch.device) -> torch.Tensor:
    """Source index for each padded position. Modes follow scipy.ndimage: 'nearest' (edge repeated),
    'reflect' (d c b a | a b c d, half-sample symmetric), 'mirror' (d c b | a b c d, = cv2 default)."""
    idx = torch.arange(-pad, length + pad, device=device)
    if mode == "nearest":
        return idx.clamp(0, length - 1)
    if mode == "reflect":
        idx = idx.remainder(2 * length)
        return torch.where(idx >= length, 2 * length - 1 - idx, idx)
    if mode == "mirror":
        if length == 1:
            return torch.zeros_like(idx)
        idx = idx.remainder(2 * length - 2)
        return torch.where(idx >= length, 2 * length - 2 - idx, idx)
    raise ValueError(f"unknown padding mode {mode!r}")


def pad2d(x: torch.Tensor, pad_h: int, pad_w: int, mode: str) -> torch.Tensor:
    h, w = x.shape[-2:]
    if mode == "nearest" or (mode == "mirror" and pad_h < h and pad_w < w):
        return F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode="replicate" if mode == "nearest" else "reflect")
    x = x.index_select(-2, pad_index(h, pad_h, mode, x.device))
    return x.index_select(-1, pad_index(w, pad_w, mode, x.device))


def correlate2d(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """Same 2-D kernel (kh, kw), odd sides, on every channel of every image. A sum of shifted copies:
    for the few-tap kernels here it is much faster on the CPU than a one-channel conv2d."""
    h, w = x.shape[-2:]
    kh, kw = kernel.shape
    xp = pad2d(x, kh // 2, kw // 2, mode)
    out = torch.zeros_like(x)
    for (i, j), weight in zip(torch.cartesian_prod(torch.arange(kh), torch.arange(kw)).tolist(),
                              kernel.flatten().tolist(), strict=True):  # fmt: skip
        if abs(weight) > 1e-12:  # the cropped disk kernels keep denormal corners
            out.add_(xp[..., i : i + h, j : j + w], alpha=weight)
    return out


def gaussian_kernel1d(sigma: float, truncate: float) -> torch.Tensor:
    """scipy.ndimage.gaussian_filter1d's weights: radius int(truncate sigma + 0.5)."""
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(torch.float32)


def gaussian_filter(x: torch.Tensor, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> torch.Tensor:
    """skimage.filters.gaussian on each channel (its defaults: mode 'nearest', truncate 4)."""
    if sigma <= 0:
        return x
    k = gaussian_kernel1d(sigma, truncate)
    x = correlate2d(x, k[None, :], mode)
    return correlate2d(x, k[:, None], mode)


@functools.lru_cache(maxsize=256)
def clipped_zoom_matrix(size: int, zoom: float) -> torch.Tensor:
    """(size, size) matrix M with M @ v = make_cifar_c's clipped_zoom of a 1-D signal v: centre crop
    of ceil(size / z), scipy zoom (order 1: linear, aligned corners) to round(crop z), centre trim."""
    crop = math.ceil(size / zoom)
    top = (size - crop) // 2
    out = int(round(crop * zoom))
    trim = (out - size) // 2
    pos = torch.arange(trim, trim + size, dtype=torch.float64)
    src = pos * (crop - 1) / (out - 1) if out > 1 else torch.zeros_like(pos)
    lo = src.floor().clamp(0, crop - 1)
    frac = src - lo
    hi = (lo + 1).clamp(max=crop - 1)
    m = torch.zeros(size, size, dtype=torch.float64)
    rows = torch.arange(size)
    m.index_put_((rows, top + lo.long()), 1 - frac, accumulate=True)
    m.index_put_((rows, top + hi.long()), frac, accumulate=True)
    return m.float()


def clipped_zoom(x: torch.Tensor, zoom: float) -> torch.Tensor:
    """make_cifar_c's clipped_zoom on NCHW (separable, so two small matrix products)."""
    return zoom_sum(x, [zoom])


def zoom_sum(x: torch.Tensor, zooms: list[float]) -> torch.Tensor:
    """Sum over z of clipped_zoom(x, z), each as M_h X M_w^T with small (H, H) and (W, W) matrices."""
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    for z in zooms:
        mh = clipped_zoom_matrix(h, z).to(x.device, x.dtype)
        mw = clipped_zoom_matrix(w, z).to(x.device, x.dtype)
        out += mh @ x @ mw.T
    return out


def motion_blur(x: torch.Tensor, radius: float, sigma: float, angles_deg: torch.Tensor) -> torch.Tensor:
    """ImageMagick 6 MotionBlurImage: a one-sided half-Gaussian line kernel of width 2 ceil(r) + 1,
    tap i read at round(i cos a, i sin a) pixels away, edge pixels repeated. One angle per image.
    Taps whose weight is below 1e-7 of the total are skipped."""
    n, c, h, w = x.shape
    width = 2 * math.ceil(radius) + 1
    taps = torch.exp(-(torch.arange(width, dtype=torch.float64) ** 2) / (2 * sigma * sigma))
    taps = (taps / taps.sum()).tolist()
    theta = torch.deg2rad(angles_deg.to(torch.float64))
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    flat = x.reshape(n, c, h * w)
    out = torch.zeros_like(flat)
    for i, weight in enumerate(taps):
        if weight < 1e-7:
            break
        dx = torch.ceil(i * torch.cos(theta) - 0.5).to(torch.int64).to(x.device)
        dy = torch.ceil(i * torch.sin(theta) - 0.5).to(torch.int64).to(x.device)
        r = (rows[None, :] + dy[:, None]).clamp(0, h - 1)
        q = (cols[None, :] + dx[:, None]).clamp(0, w - 1)
        index = (r[:, :, None] * w + q[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
        out.add_(flat.gather(2, index), alpha=weight)
    return out.view(n, c, h, w)


def to_gray(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) luminance."""
    weights = torch.tensor(LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def needs_rgb(fn: CorruptionFn) -> CorruptionFn:
    """Colour corruptions see 3 channels: grey input is repeated to RGB, and the result is turned back
    into one channel by luminance."""

    @functools.wraps(fn)
    def wrapper(x: torch.Tensor, severity: int, rng: RngContext) -> torch.Tensor:
        if x.shape[1] == 3:
            return fn(x, severity, rng)
        return to_gray(fn(x.expand(-1, 3, -1, -1).contiguous(), severity, rng))

    return wrapper


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """skimage.color.rgb2hsv on NCHW (ties of the max: blue wins over green over red, as skimage)."""
    r, g, b = x.unbind(1)
    v = x.amax(1)
    delta = v - x.amin(1)
    s = torch.where(v > 0, delta / torch.where(v > 0, v, 1.0), 0.0)
    safe = torch.where(delta > 0, delta, 1.0)
    hue = torch.where(r == v, (g - b) / safe, 0.0)
    hue = torch.where(g == v, 2.0 + (b - r) / safe, hue)
    hue = torch.where(b == v, 4.0 + (r - g) / safe, hue)
    hue = torch.where(delta > 0, (hue / 6.0).remainder(1.0), 0.0)
    return torch.stack((hue, s, v), 1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """skimage.color.hsv2rgb on NCHW."""
    h, s, v = x.unbind(1)
    h6 = h * 6.0
    sector = torch.floor(h6)
    f = h6 - sector
    sector = sector.to(torch.int64).remainder(6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    choices = (
        (v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q),
    )  # fmt: skip
    out = [torch.zeros_like(v) for _ in range(3)]
    for k, rgb in enumerate(choices):
        sel = sector == k
        out = [torch.where(sel, comp, o) for comp, o in zip(rgb, out, strict=True)]
    return torch.stack(out, 1)


def plasma_fractal(rng: RngContext, stream: int, mapsize: int, wibbledecay: float) -> torch.Tensor:
    """make_cifar_c's diamond-square plasma fractal, one per image: (N, mapsize, mapsize) in [0, 1]."""
    n = len(rng.indices)
    maps = torch.zeros(n, mapsize, mapsize, device=rng.device, dtype=torch.float64)
    step, wibble, draw = mapsize, 100.0, 0

    def wibbled_mean(a: torch.Tensor) -> torch.Tensor:
        nonlocal draw
        draw += 1
        noise = rng.uniform_range(stream * 64 + draw, tuple(a.shape[1:]), -wibble, wibble).double()
        return a / 4 + wibble * noise

    while step >= 2:
        half = step // 2
        corner = maps[:, 0:mapsize:step, 0:mapsize:step]
        square = corner + torch.roll(corner, -1, 1)
        square = square + torch.roll(square, -1, 2)
        maps[:, half:mapsize:step, half:mapsize:step] = wibbled_mean(square)
        dr = maps[:, half:mapsize:step, half:mapsize:step]
        ul = maps[:, 0:mapsize:step, 0:mapsize:step]
        lt = dr + torch.roll(dr, 1, 1) + ul + torch.roll(ul, -1, 2)
        maps[:, 0:mapsize:step, half:mapsize:step] = wibbled_mean(lt)
        tt = dr + torch.roll(dr, 1, 2) + ul + torch.roll(ul, -1, 1)
        maps[:, half:mapsize:step, 0:mapsize:step] = wibbled_mean(tt)
        step //= 2
        wibble /= wibbledecay
    maps = maps - maps.amin((1, 2), keepdim=True)
    return (maps / maps.amax((1, 2), keepdim=True).clamp_min(1e-12)).float()


def next_power_of_two(n: int) -> int:
    return 1 << max(1, math.ceil(math.log2(n)))
