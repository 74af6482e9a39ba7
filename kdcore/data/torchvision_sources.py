"""The torchvision data sets, read from their on-disk formats through torchvision.datasets.

Arrays are read whole (`.data`, `.targets`, `.labels`), never image by image through PIL. CIFAR is
stored by its authors as Python pickles: torchvision unpickles them, which is acceptable only because
the files are the user's own copy of the official release under dataset.root (never an upload).

torchvision checks the MD5 of the CIFAR and SVHN files against the official release. The subclasses
below keep torchvision's reader but check only that the files exist, so a re-packed copy in the same
format (and the small files the tests write) loads too; `_validate` checks shapes and labels instead.
A download (dataset.download=true) still checks the archive's MD5.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets

from kdcore.cards import BUILTIN_SOURCES
from kdcore.errors import DataError

TORCHVISION_SOURCES = ("cifar10", "cifar100", "mnist", "fashion_mnist", "svhn")


class _CIFAR10(datasets.CIFAR10):
    train_list = [[name, None] for name, _ in datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR10.test_list]
    meta = {**datasets.CIFAR10.meta, "md5": None}


class _CIFAR100(datasets.CIFAR100):
    train_list = [[name, None] for name, _ in datasets.CIFAR100.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR100.test_list]
    meta = {**datasets.CIFAR100.meta, "md5": None}


class _SVHN(datasets.SVHN):
    split_list = {k: [url, name, None] for k, (url, name, _) in datasets.SVHN.split_list.items()}

    def download(self) -> None:
        # The official MD5 is checked on download; only reading skips it.
        if not os.path.isfile(os.path.join(self.root, self.filename)):
            md5 = datasets.SVHN.split_list[self.split][2]
            datasets.utils.download_url(self.url, self.root, self.filename, md5)


def source_files(source: str, root: Path) -> list[Path]:
    """The files a torchvision source reads under `root` (they key the decoded-array cache)."""
    if source == "cifar10":
        folder = root / _CIFAR10.base_folder
        names = [n for n, _ in _CIFAR10.train_list + _CIFAR10.test_list] + [_CIFAR10.meta["filename"]]
    elif source == "cifar100":
        folder = root / _CIFAR100.base_folder
        names = [n for n, _ in _CIFAR100.train_list + _CIFAR100.test_list] + [_CIFAR100.meta["filename"]]
    elif source in ("mnist", "fashion_mnist"):
        folder = root / ("MNIST" if source == "mnist" else "FashionMNIST") / "raw"
        kinds = (("images", 3), ("labels", 1))
        names = [f"{split}-{k}-idx{d}-ubyte" for split in ("train", "t10k") for k, d in kinds]
    elif source == "svhn":
        folder = root
        names = ["train_32x32.mat", "test_32x32.mat"]
    else:
        raise ValueError(f"not a torchvision source: {source}")
    return [folder / n for n in names]


def _read(source: str, root: Path, train: bool, download: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images N,C,H,W uint8, labels N, class names) for one split."""
    if source in ("cifar10", "cifar100"):
        cls = _CIFAR10 if source == "cifar10" else _CIFAR100
        ds = cls(str(root), train=train, download=download)
        return np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)), np.asarray(ds.targets), list(ds.classes)
    if source in ("mnist", "fashion_mnist"):
        cls = datasets.MNIST if source == "mnist" else datasets.FashionMNIST
        ds = cls(str(root), train=train, download=download)
        return ds.data.numpy()[:, None], ds.targets.numpy(), list(ds.classes)
    ds = _SVHN(str(root), split="train" if train else "test", download=download)
    return np.ascontiguousarray(ds.data), np.asarray(ds.labels), list(BUILTIN_SOURCES["svhn"].classes)


def _validate(source: str, x: np.ndarray, y: np.ndarray, classes: list[str]) -> None:
    if x.ndim != 4 or x.dtype != np.uint8 or len(x) != len(y) or len(x) == 0:
        raise DataError(f"{source}: unexpected arrays (images {x.shape} {x.dtype}, {len(y)} labels)")
    if y.min() < 0 or y.max() >= len(classes):
        raise DataError(f"{source}: labels outside 0..{len(classes) - 1}")


def load_torchvision(
    source: str, root: Path, download: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """(train_x, train_y, test_x, test_y, classes) of a torchvision source, in the official order."""
    missing = [p for p in source_files(source, root) if not p.is_file()]
    if missing and not download:
        raise DataError(
            f"{source}: data set not found under {root} (missing {missing[0].relative_to(root)}). "
            "Set dataset.root to the folder that holds it, or set dataset.download=true (through the service: "
            "its operator puts the files in KD_DATA_DIR)."
        )
    try:
        train_x, train_y, classes = _read(source, root, True, download)
        test_x, test_y, _ = _read(source, root, False, download)
    except DataError:
        raise
    except Exception as exc:  # torchvision raises RuntimeError, unpickling/IO errors, network errors
        raise DataError(
            f"{source}: cannot read the data set under {root}: {exc}. "
            "Set dataset.root to a complete copy, or set dataset.download=true."
        ) from exc
    for x, y in ((train_x, train_y), (test_x, test_y)):
        _validate(source, x, y, classes)
    return (
        torch.from_numpy(train_x),
        torch.from_numpy(train_y.astype(np.int64)),
        torch.from_numpy(test_x),
        torch.from_numpy(test_y.astype(np.int64)),
        classes,
    )
