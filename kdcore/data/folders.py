"""ImageFolder trees (source 'imagefolder' and 'upload'): listing, fingerprinting and decoding.

Layouts: `root/train/<class>/...` with `root/test/<class>/...`; or one folder of class folders
(`root/<class>/...`, or `root/train/<class>/...` without a test folder), which is split into
train/test by a stratified 20% test split with the fixed seed 0, so every job sees the same test set.
Images are decoded once (the result is cached by kdcore.data.cache), in a thread pool: JPEG/PNG/WebP
with torchvision.io.decode_image, other formats (and 16-bit PNG) with PIL.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from kdcore.data.splits import stratified_split
from kdcore.errors import DataError
from kdcore.image_files import IMAGE_EXTENSIONS, TORCH_DECODED

try:  # torchvision 0.29 deprecates its decoders (for TorchCodec); here they are ~6x faster than PIL
    from torchvision.io import ImageReadMode, decode_image
except ImportError:  # removed in a later torchvision: PIL decodes everything
    decode_image = None

TEST_FRACTION = 0.2
TEST_SPLIT_SEED = 0


@dataclass
class FolderListing:
    root: Path
    classes: list[str]
    # (path, label, size, mtime_ns); path strings, as pathlib costs seconds on 60,000 files
    train: list[tuple[str, int, int, int]]
    test: list[tuple[str, int, int, int]] | None  # None: split train/test after decoding


def _class_files(folder: Path) -> dict[str, list[tuple[str, int, int]]]:
    """{class folder name: [(path, size, mtime_ns), ...]}, sorted, hidden entries skipped."""
    found: dict[str, list[tuple[str, int, int]]] = {}
    for name in sorted(os.listdir(folder)):
        top = os.path.join(folder, name)
        if name.startswith(".") or not os.path.isdir(top):
            continue
        files = []
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for f in sorted(filenames):
                if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS:
                    path = os.path.join(dirpath, f)
                    st = os.stat(path)
                    files.append((path, st.st_size, st.st_mtime_ns))
        found[name] = files
    return found


def list_folder(root: Path) -> FolderListing:
    """Find the class folders and image files (sorted: the order is part of the fingerprint)."""
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}. Set dataset.root to an existing folder.")
    has_test = (root / "train").is_dir() and (root / "test").is_dir()
    train_root = root / "train" if (root / "train").is_dir() else root
    train = _class_files(train_root)
    classes = list(train)
    if len(classes) < 2:
        raise DataError(f"{train_root} must hold at least 2 class folders (found {len(classes)})")
    empty = [c for c, files in train.items() if not files]
    if empty:
        kinds = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise DataError(f"class folder {train_root / empty[0]} holds no images ({kinds})")
    index = {c: i for i, c in enumerate(classes)}
    train_items = [(p, index[c], n, t) for c, fs in train.items() for p, n, t in fs]
    listing = FolderListing(root, classes, train_items, None)
    if has_test:
        test = _class_files(root / "test")
        unknown = sorted(set(test) - set(index))
        if unknown:
            raise DataError(f"test class folder '{unknown[0]}' has no train folder in {train_root}")
        listing.test = [(p, index[c], n, t) for c, fs in test.items() for p, n, t in fs]
        if not listing.test:
            raise DataError(f"{root / 'test'} holds no images")
    return listing


def fingerprint_folder(listing: FolderListing, image_size: int | None) -> str:
    """Hash of every file's relative path, label, size and mtime, plus the layout and resize option."""
    h = hashlib.sha256(f"folder-v1|size={image_size}|split={listing.test is not None}".encode())
    skip = len(str(listing.root)) + 1
    for split, items in (("train", listing.train), ("test", listing.test or [])):
        h.update("".join(f"|{split}|{p[skip:]}|{label}|{n}|{t}" for p, label, n, t in items).encode())
    return h.hexdigest()[:24]


def _decode(path: str, image_size: int | None) -> torch.Tensor:
    """One image as uint8 (C, H, W), C = 1 (gray) or 3 (colour); alpha is dropped."""
    try:
        img = None
        if decode_image is not None and os.path.splitext(path)[1].lower() in TORCH_DECODED:
            img = decode_image(path, mode=ImageReadMode.UNCHANGED)
            if img.dtype != torch.uint8:  # 16-bit PNG: let PIL reduce it
                img = None
        if img is None:
            with Image.open(path) as pil:
                pil = pil.convert("L" if pil.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB")
                img = torch.from_numpy(np.array(pil)).reshape(pil.height, pil.width, -1).permute(2, 0, 1)
    except Exception as exc:
        raise DataError(f"cannot decode image {path}: {exc}") from exc
    img = img[:1] if img.shape[0] == 2 else img[:3]  # gray+alpha -> gray, RGBA -> RGB
    if image_size is not None and tuple(img.shape[1:]) != (image_size, image_size):
        img = TF.resize(img, [image_size, image_size], antialias=True)
    return img.contiguous()


def _stack(images: list[torch.Tensor], colour: bool, where: Path) -> torch.Tensor:
    sizes = {tuple(im.shape[1:]) for im in images}
    if len(sizes) > 1:
        raise DataError(
            f"images have different sizes; set dataset.image_size (found {len(sizes)} sizes under {where}, "
            f"e.g. {sorted(sizes)[:3]})"
        )
    return torch.stack([im.expand(3, -1, -1) if colour else im for im in images])


def decode_folder(
    listing: FolderListing, image_size: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """(train_x, train_y, test_x, test_y, classes): every image decoded once, in a thread pool."""
    items = listing.train + (listing.test or [])
    workers = min(8, os.cpu_count() or 1)
    # The filter list is process-wide, so this also quiets the pool's threads (only while decoding).
    with warnings.catch_warnings(), ThreadPoolExecutor(workers) as pool:
        warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
        images = list(pool.map(lambda item: _decode(item[0], image_size), items))
    colour = any(im.shape[0] == 3 for im in images)  # keep 1 channel only if every image is gray
    labels = torch.tensor([item[1] for item in items], dtype=torch.int64)
    n_train = len(listing.train)
    if listing.test is not None:
        train_x = _stack(images[:n_train], colour, listing.root)
        test_x = _stack(images[n_train:], colour, listing.root)
        if train_x.shape[1:] != test_x.shape[1:]:
            raise DataError("train and test images have different sizes; set dataset.image_size")
        return train_x, labels[:n_train], test_x, labels[n_train:], listing.classes
    x = _stack(images, colour, listing.root)
    if len(x) < 4:
        raise DataError(f"{listing.root}: too few images to split into train and test ({len(x)})")
    train_idx, test_idx = stratified_split(labels, TEST_FRACTION, TEST_SPLIT_SEED)
    return x[train_idx], labels[train_idx], x[test_idx], labels[test_idx], listing.classes
