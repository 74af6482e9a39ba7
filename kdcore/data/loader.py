"""BatchLoader: the airbench-style in-memory loader (KellerJordan/cifar10-airbench).

The whole split is one uint8 tensor moved once to the training device; each epoch indexes it with a
random permutation and augments whole batches with tensor ops. No DataLoader, no worker processes.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from typing import Literal

import torch

from kdcore.data.augment import augmix, standard_augment

Augment = Literal["standard", "augmix", "none"]


def _affine(mean: Sequence[float], std: Sequence[float], device: torch.device) -> tuple[torch.Tensor, ...]:
    m = torch.tensor(mean, dtype=torch.float32, device=device)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32, device=device)[:, None, None]
    return m, s


def normalize_unit(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Normalise float images on the [0, 1] scale (..., C, H, W) -> float32."""
    m, s = _affine(mean, std, x.device)
    return (x.float() - m) / s


def normalize(x_uint8: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 images (..., C, H, W) -> float32 (x / 255 - mean) / std per channel, on x's device."""
    m, s = _affine(mean, std, x_uint8.device)
    return x_uint8.float().mul_(1.0 / 255.0).sub_(m).div_(s)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator whose stream depends only on (seed, epoch)."""
    digest = hashlib.sha256(f"kdcore-loader|{seed}|{epoch}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


class BatchLoader:
    """Iterate (x_float_normalised, y) batches on `device`.

    augment: "standard" (random crop + flip), "augmix" (crop + flip, then AugMix; see
    kdcore.data.augment) or "none"; flip: whether those mirror images at all (resolved by the caller
    from train.flip and the data set, kdcore.spec.resolve_flip). With augmix_jsd=True each batch is
    (torch.cat([clean, augmix_1, augmix_2]), y): 3 * B images and the B labels, not repeated; "clean"
    is the cropped and flipped image, as in the AugMix reference's JSD training.
    set_epoch(e) chooses the epoch: its permutation and augmentation depend only on (seed, e), so a
    resumed run replays exactly the batches it would have seen (iterating does not advance the epoch).
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        batch_size: int,
        shuffle: bool,
        drop_last: bool,
        augment: Augment,
        flip: bool,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str,
        seed: int,
        channels_last: bool = True,
        augmix_jsd: bool = False,
    ):
        if x.dtype != torch.uint8 or x.ndim != 4 or len(x) != len(y):
            raise ValueError("x must be uint8 (N, C, H, W) with one label per image")
        if augment not in ("standard", "augmix", "none"):
            raise ValueError(f"unknown augment: {augment!r}")
        if augmix_jsd and augment != "augmix":
            raise ValueError("augmix_jsd needs augment='augmix'")
        self.device = torch.device(device)
        self.x = x.to(self.device)  # moved once; every batch is an index into it
        self.y = y.to(self.device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.augment = augment
        self.flip = flip
        self.augmix_jsd = augmix_jsd
        self.mean, self.std = tuple(mean), tuple(std)
        self.seed = seed
        self.channels_last = channels_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _prepare(self, xb: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.augment == "none":
            out = normalize(xb, self.mean, self.std)
        elif self.augment == "standard":
            out = normalize(standard_augment(xb, generator, flip=self.flip), self.mean, self.std)
        else:
            clean = standard_augment(xb, generator, flip=self.flip)
            mixed = normalize_unit(augmix(clean, generator), self.mean, self.std)
            if self.augmix_jsd:
                second = normalize_unit(augmix(clean, generator), self.mean, self.std)
                out = torch.cat([normalize(clean, self.mean, self.std), mixed, second])
            else:
                out = mixed
        return out.contiguous(memory_format=torch.channels_last) if self.channels_last else out

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = epoch_generator(self.seed, self.epoch)
        n = len(self.x)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        order = order.to(self.device)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield self._prepare(self.x[idx], generator), self.y[idx]
