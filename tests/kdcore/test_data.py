"""kdcore.data sources: digits, torchvision formats, image folders, splits and the decode cache."""

from __future__ import annotations

import os
import pickle
import struct
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from kdcore.data import load_dataset
from kdcore.data.splits import stratified_split
from kdcore.errors import DataError
from kdcore.spec import DatasetSpec
from tests.helpers import write_tiny_cifar10
from tests.paths import CIFAR_TARBALL


def _load(tmp_path: Path, seed: int = 0, uploads_dir: Path | None = None, **spec):
    spec = DatasetSpec(split_seed=seed, **spec)
    return load_dataset(spec, cache_dir=tmp_path / "cache", uploads_dir=uploads_dir)


def _rows(x: torch.Tensor) -> Counter:
    return Counter(bytes(r) for r in x.flatten(1).numpy())


# ---- splits ---------------------------------------------------------------------------------------

def test_stratified_split_is_disjoint_complete_and_stratified():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20 + [3])
    kept, held = stratified_split(y, 0.2, seed=5)
    assert sorted(kept.tolist() + held.tolist()) == list(range(len(y)))
    assert len(held) == round(0.2 * len(y))
    counts = Counter(y[held].tolist())
    assert abs(counts[0] - 10) <= 1 and abs(counts[1] - 6) <= 1 and abs(counts[2] - 4) <= 1
    assert torch.equal(held, stratified_split(y, 0.2, seed=5)[1])
    assert not torch.equal(held, stratified_split(y, 0.2, seed=6)[1])


# ---- digits ---------------------------------------------------------------------------------------

def test_digits_shapes_classes_and_partition(tmp_path):
    data = _load(tmp_path, source="digits", val_fraction=0.1)
    assert data.classes == [str(d) for d in range(10)] and data.num_classes == 10
    assert data.in_channels == 1 and data.image_size == 8
    for x, y in ((data.train_x, data.train_y), (data.val_x, data.val_y), (data.test_x, data.test_y)):
        assert x.dtype == torch.uint8 and y.dtype == torch.int64 and x.shape[1:] == (1, 8, 8)
    n = 1797
    assert len(data.test_x) == round(0.2 * n)
    assert len(data.val_x) == round(0.1 * (n - len(data.test_x)))
    assert len(data.train_x) + len(data.val_x) + len(data.test_x) == n
    # The three splits partition the original images (compared as multisets of pixel rows).
    full = torch.from_numpy(load_digits().images * 255 / 16).round().to(torch.uint8)
    assert _rows(torch.cat([data.train_x, data.val_x, data.test_x])) == _rows(full)
    test_share = Counter(data.test_y.tolist())
    all_share = Counter(load_digits().target.tolist())
    assert all(abs(test_share[c] - 0.2 * all_share[c]) <= 1.5 for c in range(10))
    # mean/std come from train, on the [0, 1] scale
    train = data.train_x.double() / 255
    assert data.mean[0] == pytest.approx(train.mean().item())
    assert data.std[0] == pytest.approx(train.std().item(), rel=1e-3)


def test_digits_test_set_is_fixed_and_val_follows_the_split_seed(tmp_path):
    a, b = _load(tmp_path, seed=0, source="digits"), _load(tmp_path, seed=1, source="digits")
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.val_y, b.val_y) or not torch.equal(a.val_x, b.val_x)
    assert a.fingerprint != b.fingerprint


def test_subset_and_test_subset(tmp_path):
    data = _load(tmp_path, source="digits", subset=200, test_subset=50, val_fraction=0.1)
    assert len(data.train_x) + len(data.val_x) == 200 and len(data.val_x) == 20
    assert Counter(data.test_y.tolist()) == {c: 5 for c in range(10)}  # class-balanced
    full = _load(tmp_path, source="digits")
    assert torch.equal(full.test_index, torch.arange(len(full.test_y)))
    # test_index: where each kept image sits in the source's test split
    assert torch.equal(data.test_x, full.test_x[data.test_index])
    assert torch.equal(data.test_y, full.test_y[data.test_index])


# ---- image folders --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cifar_jpegs(tmp_path_factory) -> dict[str, list[tuple[str, bytes]]]:
    """A dozen real CIFAR-10 JPEGs from each of the first 3 classes in the shared tarball."""
    if not CIFAR_TARBALL.is_file():
        pytest.skip(f"{CIFAR_TARBALL} not found")
    found: dict[str, list[tuple[str, bytes]]] = {}
    with tarfile.open(CIFAR_TARBALL) as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3 or parts[0] != "train":
                continue
            files = found.setdefault(parts[1], [])
            if len(files) < 12:
                files.append((parts[2], tar.extractfile(member).read()))
            full = [c for c, fs in found.items() if len(fs) == 12]
            if len(full) == 3:
                return {c: found[c] for c in full}
    pytest.skip("tarball holds fewer than 3 classes")


def _write_cifar_tree(root: Path, jpegs) -> Path:
    for cls, files in jpegs.items():
        for i, (name, blob) in enumerate(files):
            split = "test" if i < 3 else "train"
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            (root / split / cls / name).write_bytes(blob)
    return root


def test_imagefolder_of_real_jpegs(tmp_path, cifar_jpegs):
    root = _write_cifar_tree(tmp_path / "cifar", cifar_jpegs)
    data = _load(tmp_path, source="imagefolder", root=str(root), val_fraction=0.2)
    assert data.classes == sorted(cifar_jpegs) and data.in_channels == 3 and data.image_size == 32
    assert len(data.test_x) == 9 and len(data.train_x) + len(data.val_x) == 27
    assert Counter(data.test_y.tolist()) == {0: 3, 1: 3, 2: 3}
    # Pixels agree with PIL's decoding of the same files (JPEG decoders may differ by rounding).
    first_cls = data.classes[0]
    test_files = sorted(root.glob(f"test/{first_cls}/*.jpg"))
    pil = torch.from_numpy(np.array(Image.open(test_files[0]).convert("RGB"))).permute(2, 0, 1)
    assert (data.test_x[0].float() - pil.float()).abs().mean() < 2.0
    small = _load(tmp_path, source="imagefolder", root=str(root), image_size=16)
    assert small.train_x.shape[1:] == (3, 16, 16) and small.test_x.shape[1:] == (3, 16, 16)
    assert small.fingerprint != data.fingerprint


def _png(path: Path, size: tuple[int, int], mode: str = "L", seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) + (() if mode == "L" else (3,))
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def _gray_folder(root: Path, n: int = 10, sizes=((12, 12),)) -> Path:
    for cls in ("a", "b"):
        for i in range(n):
            _png(root / cls / f"{i}.png", sizes[i % len(sizes)], seed=i + (100 if cls == "b" else 0))
    return root


def test_grayscale_folder_stays_one_channel_and_splits_20_percent(tmp_path):
    root = _gray_folder(tmp_path / "gray")
    data = _load(tmp_path, source="imagefolder", root=str(root))
    assert data.in_channels == 1 and data.classes == ["a", "b"]
    assert len(data.test_x) == 4 and Counter(data.test_y.tolist()) == {0: 2, 1: 2}
    expected = np.array(Image.open(root / "a" / "0.png"))
    all_x = torch.cat([data.train_x, data.val_x, data.test_x])
    assert any(torch.equal(img[0], torch.from_numpy(expected)) for img in all_x)
    again = _load(tmp_path, seed=7, source="imagefolder", root=str(root))
    assert torch.equal(again.test_x, data.test_x)  # the test split does not follow the split seed


def test_one_colour_image_makes_the_set_rgb(tmp_path):
    root = _gray_folder(tmp_path / "mixed")
    _png(root / "b" / "rgb.png", (12, 12), mode="RGB")
    data = _load(tmp_path, source="imagefolder", root=str(root))
    assert data.in_channels == 3
    gray = torch.cat([data.train_x, data.val_x, data.test_x])
    assert sum(bool((img[0] == img[1]).all() and (img[1] == img[2]).all()) for img in gray) == 20


def test_mixed_sizes_need_image_size(tmp_path):
    root = _gray_folder(tmp_path / "sizes", sizes=((12, 12), (10, 14)))
    with pytest.raises(DataError, match="images have different sizes; set dataset.image_size"):
        _load(tmp_path, source="imagefolder", root=str(root))
    data = _load(tmp_path, source="imagefolder", root=str(root), image_size=8)
    assert data.train_x.shape[1:] == (1, 8, 8)


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        _load(tmp_path, source="imagefolder", root=str(tmp_path / "nowhere"))
    _png(tmp_path / "one" / "only" / "0.png", (8, 8))
    with pytest.raises(DataError, match="at least 2 class"):
        _load(tmp_path, source="imagefolder", root=str(tmp_path / "one"))
    (tmp_path / "one" / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        _load(tmp_path, source="imagefolder", root=str(tmp_path / "one"))
    with pytest.raises(DataError, match="not found"):
        _load(tmp_path, source="upload", dataset_id="missing", uploads_dir=tmp_path)
    with pytest.raises(DataError, match="invalid dataset_id"):
        _load(tmp_path, source="upload", dataset_id="../one", uploads_dir=tmp_path / "uploads")


def test_upload_reads_the_uploads_folder(tmp_path):
    _gray_folder(tmp_path / "uploads" / "ds1")
    data = _load(tmp_path, source="upload", dataset_id="ds1", uploads_dir=tmp_path / "uploads")
    assert data.classes == ["a", "b"] and len(data.train_x) + len(data.val_x) + len(data.test_x) == 20


def test_second_load_reads_the_cache_not_the_images(tmp_path):
    """After the first load, every image is overwritten with garbage of the same size and its mtime
    restored: the fingerprint (paths, sizes, mtimes) is unchanged, so a second load that succeeds with
    identical arrays cannot have decoded any image. Touching one file must then force a decode, which
    fails on the garbage: that shows the first success came from the cache and the key is live."""
    root = _gray_folder(tmp_path / "cached")
    first = _load(tmp_path, source="imagefolder", root=str(root))
    assert len(list((tmp_path / "cache" / "data").glob("*.safetensors"))) == 1
    files = sorted(root.rglob("*.png"))
    for f in files:
        st = f.stat()
        f.write_bytes(b"\0" * st.st_size)
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = _load(tmp_path, source="imagefolder", root=str(root))
    assert second.fingerprint == first.fingerprint and second.classes == first.classes
    for name in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert torch.equal(getattr(first, name), getattr(second, name))
    os.utime(files[0], ns=(files[0].stat().st_atime_ns, files[0].stat().st_mtime_ns + 10**9))
    with pytest.raises(DataError, match="cannot decode"):
        _load(tmp_path, source="imagefolder", root=str(root))


# ---- torchvision formats --------------------------------------------------------------------------

def test_torchvision_cifar10_format(tmp_path):
    rows, labels = write_tiny_cifar10(tmp_path / "tv")
    data = _load(tmp_path, source="cifar10", root=str(tmp_path / "tv"), val_fraction=0.2, test_subset=10)
    assert data.classes == [f"class{i}" for i in range(10)] and data.image_size == 32
    assert torch.equal(data.test_x, torch.from_numpy(rows[30:36].reshape(-1, 3, 32, 32)))  # official order
    assert data.test_index.tolist() == list(range(6))
    assert torch.equal(data.test_y, torch.from_numpy(labels[30:36]).long())
    train = torch.from_numpy(rows[:30].reshape(-1, 3, 32, 32))
    assert _rows(torch.cat([data.train_x, data.val_x])) == _rows(train)
    assert len(data.val_x) == 6


def test_torchvision_source_reads_the_data_dir_when_the_spec_names_no_root(tmp_path):
    rows, _ = write_tiny_cifar10(tmp_path / "service-data")  # the service passes KD_DATA_DIR
    data = load_dataset(DatasetSpec(source="cifar10", test_subset=10), cache_dir=tmp_path / "cache",
                        data_dir=tmp_path / "service-data")
    assert torch.equal(data.test_x, torch.from_numpy(rows[30:36].reshape(-1, 3, 32, 32)))


def _idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">I", 0x0800 | array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_torchvision_mnist_format_in_the_default_root(tmp_path):
    raw = tmp_path / "cache" / "torchvision" / "MNIST" / "raw"  # root defaults to cache_dir/torchvision
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8)
    labels = np.arange(40) % 10
    _idx(raw / "train-images-idx3-ubyte", images[:30])
    _idx(raw / "train-labels-idx1-ubyte", labels[:30])
    _idx(raw / "t10k-images-idx3-ubyte", images[30:])
    _idx(raw / "t10k-labels-idx1-ubyte", labels[30:])
    data = _load(tmp_path, source="mnist")
    assert data.in_channels == 1 and data.image_size == 28 and data.num_classes == 10
    assert torch.equal(data.test_x[:, 0], torch.from_numpy(images[30:]))
    assert data.test_y.tolist() == labels[30:].tolist()
    resized = _load(tmp_path, source="mnist", image_size=16)
    assert resized.train_x.shape[1:] == (1, 16, 16)


@pytest.mark.parametrize("source", ["cifar10", "cifar100", "mnist", "fashion_mnist", "svhn"])
def test_missing_torchvision_data_says_what_to_set(tmp_path, source):
    with pytest.raises(DataError, match=r"dataset\.root.*dataset\.download=true"):
        _load(tmp_path, source=source, root=str(tmp_path / "empty"))


def test_torchvision_cifar100_and_svhn_formats(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(2)
    folder = tmp_path / "tv" / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n in (("train", 20), ("test", 5)):
        y = [int(v) for v in rng.integers(0, 100, n)]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "fine_labels": y}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)]}, f)
    c100 = _load(tmp_path, source="cifar100", root=str(tmp_path / "tv"))
    assert c100.num_classes == 100 and len(c100.test_x) == 5 and c100.train_x.shape[1:] == (3, 32, 32)
    # SVHN: .mat files with X as (32, 32, 3, N) and the digit 0 stored as label 10.
    x = rng.integers(0, 256, (32, 32, 3, 12), dtype=np.uint8)
    labels = np.array([[10], [1], [2], [3], [4], [5], [6], [7], [8], [9], [10], [1]], dtype=np.uint8)
    for split in ("train", "test"):
        savemat(tmp_path / "tv" / f"{split}_32x32.mat", {"X": x, "y": labels})
    svhn = _load(tmp_path, source="svhn", root=str(tmp_path / "tv"))
    assert svhn.test_y.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert torch.equal(svhn.test_x, torch.from_numpy(x).permute(3, 2, 0, 1))  # torchvision's transpose
