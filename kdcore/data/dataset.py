"""load_dataset: any DatasetSpec source -> ImageData (uint8 CPU tensors, splits, channel stats).

Decoding is cached on disk, keyed by a fingerprint of the source (see kdcore.data.cache); the cheap,
seed-dependent steps run on every load, in this order: `subset` (seeded random N training images),
then the validation split (stratified `val_fraction` of what is left), then `test_subset`. Both seeded
steps use `spec.split_seed`, never the training seed: jobs that differ only in training seeds get the
same arrays, the same fingerprint, and so the same cached teacher and corrupted test sets.
`test_subset` keeps a class-balanced subset of N test images drawn with the fixed SUBSET_SEED (the
same images for every job: image folders store their test set grouped by class, so "the first N"
would drop whole classes). `ImageData.test_index` says where each kept test image sits in the
source's own test split (for CIFAR, the official order that the CIFAR-10-C/100-C arrays follow).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as TF

from kdcore.cards import BUILTIN_SOURCES
from kdcore.data.cache import cache_path, read_cache, write_cache
from kdcore.data.folders import decode_folder, fingerprint_folder, list_folder
from kdcore.data.splits import SUBSET_SEED, balanced_subset, random_subset, stratified_split
from kdcore.data.torchvision_sources import TORCHVISION_SOURCES, load_torchvision, source_files
from kdcore.errors import DataError
from kdcore.spec import DatasetSpec

Decoded = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str]]
DIGITS_TEST_SEED = 0


@dataclass
class ImageData:
    train_x: torch.Tensor  # uint8 (N, C, H, W), CPU
    train_y: torch.Tensor  # int64 (N,)
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]  # per channel, [0, 1] scale, on train_x
    std: tuple[float, ...]
    fingerprint: str  # source + every option that shapes the arrays above (split_seed included)
    test_index: torch.Tensor  # int64 (N_test,): position of each test image in the source's test split
    source: str  # dataset.source (it decides the default of train.flip)

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        """Height of the images (they are square unless the folder held non-square ones)."""
        return int(self.train_x.shape[2])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _hash(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:24]


def _digits() -> Decoded:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images).mul(255.0 / 16.0).round().to(torch.uint8).unsqueeze(1)
    y = torch.from_numpy(bunch.target).to(torch.int64)
    # No official test split: a stratified 20% with a fixed seed, the same for every job.
    train_idx, test_idx = stratified_split(y, 0.2, DIGITS_TEST_SEED)
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx], list(BUILTIN_SOURCES["digits"].classes)


def _resize(x: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None or tuple(x.shape[2:]) == (size, size):
        return x
    chunks = [TF.resize(c, [size, size], antialias=True) for c in x.split(4096)]
    return torch.cat(chunks)


def _file_stats(files: list[Path], root: Path) -> list[tuple[str, int, int]]:
    return [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def _resolve(
    spec: DatasetSpec, cache_dir: Path, uploads_dir: Path | None, data_dir: Path | None = None
) -> tuple[Callable[[], str], Callable[[], Decoded]]:
    """(fingerprint function, decode function) for the spec's source."""
    size = spec.image_size
    if spec.source == "digits":
        import sklearn

        def decode_digits() -> Decoded:
            tx, ty, vx, vy, classes = _digits()
            return _resize(tx, size), ty, _resize(vx, size), vy, classes

        return (lambda: _hash("digits-v1", sklearn.__version__, size)), decode_digits
    if spec.source in TORCHVISION_SOURCES:
        root = Path(spec.root) if spec.root else Path(data_dir) if data_dir else Path(cache_dir) / "torchvision"
        files = source_files(spec.source, root)

        def decode() -> Decoded:
            tx, ty, vx, vy, classes = load_torchvision(spec.source, root, spec.download)
            return _resize(tx, size), ty, _resize(vx, size), vy, classes

        def fingerprint() -> str:
            if not all(p.is_file() for p in files):
                return ""  # not there yet: decode() downloads it or raises DataError
            return _hash("torchvision-v1", spec.source, _file_stats(files, root), size)

        return fingerprint, decode
    if spec.source == "upload":
        if uploads_dir is None:
            raise DataError("dataset.source 'upload' needs an uploads folder (none configured)")
        root = Path(uploads_dir) / str(spec.dataset_id)
        if Path(uploads_dir).resolve() not in root.resolve().parents:
            raise DataError(f"invalid dataset_id: {spec.dataset_id!r}")
        if not root.is_dir():
            raise DataError(f"uploaded data set {spec.dataset_id!r} not found")
    else:
        root = Path(str(spec.root))
    listing = list_folder(root)
    return (lambda: fingerprint_folder(listing, size)), (lambda: decode_folder(listing, size))


def _decoded(spec: DatasetSpec, cache_dir: Path, uploads_dir: Path | None,
             data_dir: Path | None) -> tuple[Decoded, str]:
    fingerprint, decode = _resolve(spec, cache_dir, uploads_dir, data_dir)
    fp = fingerprint()
    if fp:
        cached = read_cache(cache_path(cache_dir, fp))
        if cached is not None:
            t, classes = cached
            return (t["train_x"], t["train_y"], t["test_x"], t["test_y"], classes), fp
    data = decode()
    fp = fp or fingerprint()  # a torchvision download has just created the files
    keys = ("train_x", "train_y", "test_x", "test_y")
    write_cache(cache_path(cache_dir, fp), dict(zip(keys, data[:4], strict=True)), data[4])
    return data, fp


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images on the [0, 1] scale, exact, from
    256-bin histograms (much cheaper than a float copy of the whole set)."""
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(x.shape[1]):
        hist = torch.bincount(x[:, c].reshape(-1), minlength=256).to(torch.float64)
        p = hist / hist.sum()
        mean = float((p * levels).sum())
        var = float((p * (levels - mean).square()).sum())
        means.append(mean)
        stds.append(max(var**0.5, 1e-3))  # a constant channel must not divide by zero
    return tuple(means), tuple(stds)


def load_dataset(
    spec: DatasetSpec, *, cache_dir: Path, uploads_dir: Path | None = None, data_dir: Path | None = None,
) -> ImageData:
    """Load, split and describe the data set of `spec` (raises DataError for problems a user can fix).

    Built-in torchvision sources read `spec.root`, else `data_dir` (the service's data folder), else
    `<cache_dir>/torchvision`."""
    seed = spec.split_seed
    (train_x, train_y, test_x, test_y, classes), source_fp = _decoded(spec, Path(cache_dir), uploads_dir, data_dir)
    if spec.subset is not None:
        keep = random_subset(len(train_x), spec.subset, seed)
        train_x, train_y = train_x[keep], train_y[keep]
    if len(train_x) < 2:
        raise DataError(f"too few training images ({len(train_x)}) to hold out a validation set")
    train_idx, val_idx = stratified_split(train_y, spec.val_fraction, seed)
    val_x, val_y = train_x[val_idx], train_y[val_idx]
    train_x, train_y = train_x[train_idx], train_y[train_idx]
    test_index = torch.arange(len(test_x))
    if spec.test_subset is not None:
        test_index = balanced_subset(test_y, spec.test_subset, SUBSET_SEED)
        test_x, test_y = test_x[test_index], test_y[test_index]
    mean, std = channel_stats(train_x)
    test_rule = None if spec.test_subset is None else (spec.test_subset, "balanced", SUBSET_SEED)
    fingerprint = _hash(source_fp, spec.val_fraction, spec.subset, test_rule, seed)
    return ImageData(
        train_x.contiguous(), train_y.contiguous(), val_x.contiguous(), val_y.contiguous(),
        test_x.contiguous(), test_y.contiguous(), classes, mean, std, fingerprint,
        test_index=test_index.to(torch.int64), source=spec.source,
    )
