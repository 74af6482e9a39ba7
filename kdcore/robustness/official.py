"""The released CIFAR-10-C / CIFAR-100-C arrays (Hendrycks & Dietterich 2019) from a local folder.

Layout as published: <root>/<corruption>.npy, shape (5 * n, 32, 32, 3) uint8, severities 1..5 in
order, n = 10,000 per severity; <root>/labels.npy, shape (5 * n,) integers. n is derived from the
array length / 5 (the released files give 10,000); this is what lets a test use a small folder in
the same format. Within a severity the images follow the CIFAR test split's order, so a subset of the
test set is read at its own test-split positions (`indices`). Files are opened with allow_pickle=False
(never unpickled) and memory-mapped, so a cell reads only its own images from disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from kdcore.errors import DataError

N_SEVERITIES = 5
IMAGE_SHAPE = (32, 32, 3)


def official_source_label(num_classes: int) -> str:
    """Only the released arrays are called CIFAR-10-C / CIFAR-100-C."""
    return {10: "CIFAR-10-C", 100: "CIFAR-100-C"}.get(num_classes, f"CIFAR-C ({num_classes} classes)")


def official_folder(official_root: str | None, data_dir: Path | None, num_classes: int) -> Path:
    """evaluate.official_root, else <data_dir>/CIFAR-10-C (or CIFAR-100-C): the service names no folder."""
    if official_root:
        return Path(official_root)
    if data_dir is None:
        raise DataError("evaluate.source 'official' needs evaluate.official_root (the folder of the "
                        "CIFAR-10-C/100-C .npy files)")
    return Path(data_dir) / official_source_label(num_classes)


def _open(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"official corruption file not found: {path}")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:  # object arrays need pickle; truncated or non-.npy files
        raise DataError(f"cannot read {path} as a plain .npy array: {exc}") from exc


def _check_images(path: Path, images: np.ndarray) -> int:
    if images.ndim != 4 or tuple(images.shape[1:]) != IMAGE_SHAPE or images.shape[0] % N_SEVERITIES:
        raise DataError(
            f"{path}: expected shape (5 * n, 32, 32, 3) uint8 (the release has n = 10000), "
            f"found {tuple(images.shape)}"
        )
    if images.dtype != np.uint8:
        raise DataError(f"{path}: expected dtype uint8, found {images.dtype}")
    return images.shape[0] // N_SEVERITIES


def _check_labels(path: Path, labels: np.ndarray, n_images: int, num_classes: int) -> None:
    if labels.shape != (n_images,):
        raise DataError(f"{path}: expected shape ({n_images},) to match the images, found {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: expected integer labels, found dtype {labels.dtype}")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high + 1 != num_classes:
        raise DataError(
            f"evaluate.official_root: {path}: labels span {low}..{high} ({high + 1} classes) but the data set "
            f"has {num_classes} classes (CIFAR-10-C needs a 10-class, CIFAR-100-C a 100-class data set)"
        )


def load_official(
    root: str | Path,
    corruption: str,
    severity: int,
    *,
    num_classes: int,
    indices: Sequence[int] | np.ndarray | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One (corruption, severity) cell: images uint8 (n, 3, 32, 32) and labels int64 (n,).

    indices: positions in the CIFAR test split (0 .. n_per_severity - 1) to read, in the given order;
    None reads the whole severity. Raises DataError naming the file and the expected vs found shape
    when the folder does not hold the published layout.
    """
    if not 1 <= severity <= N_SEVERITIES:
        raise ValueError(f"severity must be 1..5, got {severity}")
    root = Path(root)
    image_path, label_path = root / f"{corruption}.npy", root / "labels.npy"
    images, labels = _open(image_path), _open(label_path)
    per_severity = _check_images(image_path, images)
    _check_labels(label_path, labels, images.shape[0], num_classes)
    start = (severity - 1) * per_severity
    if indices is None:
        rows: slice | np.ndarray = slice(start, start + per_severity)
    else:
        wanted = np.asarray(indices, dtype=np.int64)
        if len(wanted) and (wanted.min() < 0 or wanted.max() >= per_severity):
            raise DataError(
                f"evaluate.official_root: {image_path} holds {per_severity} images per severity, but the test "
                f"set reaches position {int(wanted.max())} (the arrays must follow the CIFAR test split)"
            )
        rows = start + wanted
    x = torch.from_numpy(np.array(images[rows]))  # copies just these images off the map
    x = x.permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(np.asarray(labels[rows]).astype(np.int64))
    return x, y
