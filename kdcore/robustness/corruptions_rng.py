"""Counter-based random numbers: the value for (seed, corruption, severity, image index, stream,
element index) is a pure function of those integers, so a corrupted image never depends on the
batch it was computed in nor on the device.

The mixer is MurmurHash3's 32-bit finaliser evaluated on int64 tensors holding values below 2**32.
A multiplier C >= 2**31 is applied as C - 2**32 (the same number modulo 2**32): then no product
leaves the int64 range (|h (C - 2**32)| < 2**63), so nothing relies on signed overflow, and the
mask & 0xFFFFFFFF of the (possibly negative) product is exactly h C mod 2**32.
"""

from __future__ import annotations

import math

import torch

MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9


def _mul32(h: torch.Tensor, const: int) -> torch.Tensor:
    signed = const - (1 << 32) if const >= 1 << 31 else const
    return (h * signed) & MASK32


def mix32(h: torch.Tensor) -> torch.Tensor:
    """MurmurHash3 fmix32 on an int64 tensor of 32-bit values."""
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def mix32_int(h: int) -> int:
    """The same mixer on a Python int (for scalar keys)."""
    h &= MASK32
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & MASK32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & MASK32
    return h ^ (h >> 16)


def combine_int(*parts: int) -> int:
    h = 0x243F6A88
    for p in parts:
        h = mix32_int(h ^ mix32_int((p * _GOLDEN + 0x7F4A7C15) & MASK32))
        h = mix32_int(h ^ mix32_int(p >> 32))
    return h


class RngContext:
    """Random numbers for one call of a corruption: image i of the batch uses key indices[i]."""

    def __init__(self, seed: int, corruption_id: int, severity: int, indices: torch.Tensor) -> None:
        self.base = combine_int(seed, corruption_id, severity)
        self.indices = indices.to(torch.int64)
        self.device = indices.device

    def bits(self, stream: int, shape: tuple[int, ...]) -> torch.Tensor:
        """(N, *shape) int64 tensor of 32 random bits per element."""
        key = combine_int(self.base, stream)
        idx = self.indices
        img = mix32((mix32(idx & MASK32) ^ key) & MASK32)
        img = mix32(img ^ mix32((idx >> 32) & MASK32))
        n_el = math.prod(shape)
        counter = torch.arange(n_el, device=self.device, dtype=torch.int64)
        counter = mix32(mix32((counter * _GOLDEN + 0x632BE5AB) & MASK32) ^ key)  # per element, shared
        return mix32(img[:, None] ^ counter[None, :]).view(len(idx), *shape)

    def uniform(self, stream: int, shape: tuple[int, ...]) -> torch.Tensor:
        """U(0, 1) float32, never exactly 0 or 1 (24-bit resolution)."""
        return ((self.bits(stream, shape) >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))

    def uniform_range(self, stream: int, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
        return low + (high - low) * self.uniform(stream, shape)

    def normal(self, stream: int, shape: tuple[int, ...]) -> torch.Tensor:
        """N(0, 1) float32 by Box-Muller: each pair of uniforms gives two normals (cos and sin)."""
        n_el = math.prod(shape)
        half = (n_el + 1) // 2
        radius = torch.sqrt(-2.0 * torch.log(self.uniform(stream, (half,))))
        angle = (2.0 * math.pi) * self.uniform(stream + 0x5BD1E995, (half,))
        z = torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], 1)[:, :n_el]
        return z.reshape(len(self.indices), *shape)

    def randint(self, stream: int, shape: tuple[int, ...], low: int, high: int) -> torch.Tensor:
        """Integers in [low, high) like numpy.random.randint (modulo bias < 2**-20 for small ranges)."""
        return low + self.bits(stream, shape) % (high - low)

    def generators(self, stream: int) -> list[torch.Generator]:
        """One CPU torch.Generator per image, seeded from the hash (for samplers with no hash form)."""
        seeds = self.bits(stream, (2,))
        seeds = (seeds[:, 0] << 31) ^ seeds[:, 1]
        return [torch.Generator().manual_seed(int(s)) for s in seeds.cpu()]
