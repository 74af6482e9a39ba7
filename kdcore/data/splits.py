"""Seeded, stratified index splits (numpy RNG: independent of torch's global state)."""

from __future__ import annotations

import numpy as np
import torch


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices into (kept, held_out) with about `fraction` of every class held out.

    The held-out total is round(fraction * N) clipped to [1, N - 1] and is shared among the classes
    by largest remainder, so tiny classes never make the split fail (sklearn's stratified split
    refuses classes with one member). Both index tensors are sorted, so the original order survives.
    """
    y = labels.cpu().numpy()
    n = len(y)
    if n < 2:
        raise ValueError("need at least 2 items to split")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    total = int(min(max(round(fraction * n), 1), n - 1))
    exact = counts * (total / n)
    take = np.floor(exact).astype(np.int64)
    # Largest remainder; ties broken by the seeded RNG, not by class order.
    order = np.lexsort((rng.random(len(classes)), -(exact - take)))
    for i in order[: total - int(take.sum())]:
        take[i] += 1
    held_out = []
    for cls, k in zip(classes, take, strict=True):
        members = np.flatnonzero(y == cls)
        held_out.append(rng.permutation(members)[:k])
    held = np.sort(np.concatenate(held_out))
    mask = np.ones(n, dtype=bool)
    mask[held] = False
    return torch.from_numpy(np.flatnonzero(mask)), torch.from_numpy(held)


def random_subset(n: int, size: int, seed: int) -> torch.Tensor:
    """Sorted indices of a seeded random subset of `size` out of `n` (all of them when size >= n)."""
    if size >= n:
        return torch.arange(n)
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.sort(rng.choice(n, size=size, replace=False)))


def stratified_subset(labels: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """Sorted indices of a seeded subset of `size` items with class shares kept (all when size >= N)."""
    n = len(labels)
    if size >= n:
        return torch.arange(n)
    _, chosen = stratified_split(labels, size / n, seed)
    return chosen
