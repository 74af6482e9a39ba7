"""Seeded, stratified index splits (numpy RNG: independent of torch's global state)."""

from __future__ import annotations

import numpy as np
import torch

# The seed of every evaluation subset (dataset.test_subset, evaluate.max_images): fixed, so every job,
# model, run and seed on the same data is scored on the very same images.
SUBSET_SEED = 0


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


def balanced_subset(labels: torch.Tensor, size: int, seed: int = SUBSET_SEED) -> torch.Tensor:
    """Sorted indices of a seeded subset of `size` items, an equal share per class as far as the
    counts allow (all of them when size >= N).

    Shares are filled like water: a class with fewer items than the equal share gives all it has and
    the others share the rest. What an equal split leaves over (fewer items than the classes still
    open) goes one each to classes drawn by the seeded RNG: largest remainder, where every class has
    the same remainder. Which items of a class are kept is seeded too.
    """
    y = labels.cpu().numpy()
    n = len(y)
    if size >= n:
        return torch.arange(n)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    take = np.zeros(len(classes), dtype=np.int64)
    left, unfilled = size, list(np.argsort(counts, kind="stable"))
    while unfilled and counts[unfilled[0]] <= left // len(unfilled):
        smallest = unfilled.pop(0)
        take[smallest] = counts[smallest]
        left -= int(counts[smallest])
    if unfilled:  # every open class holds more than `share`, so share + 1 still fits
        share, extra = divmod(left, len(unfilled))
        take[unfilled] = share
        take[rng.permutation(unfilled)[:extra]] += 1
    chosen = [rng.permutation(np.flatnonzero(y == cls))[:k] for cls, k in zip(classes, take, strict=True)]
    return torch.from_numpy(np.sort(np.concatenate(chosen)))
