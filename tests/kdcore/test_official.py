"""The official CIFAR-10-C / CIFAR-100-C loader, on a small folder in the published format.

The folder holds 4 images per severity (20 in all): the per-severity count is the array length / 5,
so the format is the same as the release's 50,000 = 5 x 10,000.
"""

import numpy as np
import pytest

from kdcore.errors import DataError
from kdcore.robustness.official import load_official, official_source_label

PER_SEVERITY = 4


def _write_folder(root, n=5 * PER_SEVERITY, classes=10):
    root.mkdir(exist_ok=True)
    # Image i is filled with the value i, so every slice can be recognised.
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 32, 32, 3)).copy()
    images[:, 0, 0, 1] = 200  # one distinct channel value, to check the HWC -> CHW transpose
    np.save(root / "gaussian_noise.npy", images)
    np.save(root / "labels.npy", (np.arange(n) % classes).astype(np.uint8))
    return root


def test_reads_one_severity_as_uint8_nchw(tmp_path):
    root = _write_folder(tmp_path / "c10")
    x, y = load_official(root, "gaussian_noise", 2, num_classes=10)
    assert x.shape == (PER_SEVERITY, 3, 32, 32) and str(x.dtype) == "torch.uint8"
    assert x[:, 0, 5, 5].tolist() == [4, 5, 6, 7]  # severity 2 = images 4..7
    assert x[:, 1, 0, 0].tolist() == [200] * PER_SEVERITY
    assert y.tolist() == [4, 5, 6, 7] and str(y.dtype) == "torch.int64"


def test_indices_are_test_split_positions_within_the_severity(tmp_path):
    root = _write_folder(tmp_path / "c10")
    x, y = load_official(root, "gaussian_noise", 3, num_classes=10, indices=[1, 3])
    assert x[:, 0, 5, 5].tolist() == [9, 11] and y.tolist() == [9, 1]  # severity 3 = images 8..11
    x, _ = load_official(root, "gaussian_noise", 5, num_classes=10, indices=np.array([], dtype=np.int64))
    assert x.shape == (0, 3, 32, 32)
    with pytest.raises(DataError, match=r"evaluate.official_root.*4 images per severity.*position 4"):
        load_official(root, "gaussian_noise", 1, num_classes=10, indices=[0, 4])


def test_missing_file_names_the_file(tmp_path):
    root = _write_folder(tmp_path / "c10")
    with pytest.raises(DataError, match="fog.npy"):
        load_official(root, "fog", 1, num_classes=10)
    (root / "labels.npy").unlink()
    with pytest.raises(DataError, match="labels.npy"):
        load_official(root, "gaussian_noise", 1, num_classes=10)


@pytest.mark.parametrize("shape", [(20, 32, 32, 1), (20, 3, 32, 32), (21, 32, 32, 3), (20, 32, 32)])
def test_wrong_image_shape_names_file_expected_and_found(tmp_path, shape):
    root = _write_folder(tmp_path / "c10")
    np.save(root / "gaussian_noise.npy", np.zeros(shape, dtype=np.uint8))
    with pytest.raises(DataError) as info:
        load_official(root, "gaussian_noise", 1, num_classes=10)
    message = str(info.value)
    assert "gaussian_noise.npy" in message and "expected" in message and str(shape) in message


def test_wrong_dtype_and_label_problems(tmp_path):
    root = _write_folder(tmp_path / "c10")
    np.save(root / "labels.npy", np.zeros(19, dtype=np.int64))
    with pytest.raises(DataError, match=r"labels.npy: expected shape \(20,\)"):
        load_official(root, "gaussian_noise", 1, num_classes=10)
    np.save(root / "labels.npy", np.linspace(0, 9, 20))
    with pytest.raises(DataError, match="integer labels"):
        load_official(root, "gaussian_noise", 1, num_classes=10)
    _write_folder(root)
    np.save(root / "gaussian_noise.npy", np.zeros((20, 32, 32, 3), dtype=np.float32))
    with pytest.raises(DataError, match="uint8"):
        load_official(root, "gaussian_noise", 1, num_classes=10)


def test_labels_must_match_the_models_class_count(tmp_path):
    root = _write_folder(tmp_path / "c10")
    with pytest.raises(DataError, match="100 classes"):
        load_official(root, "gaussian_noise", 1, num_classes=100)
    root100 = _write_folder(tmp_path / "c100", n=200, classes=100)
    x, y = load_official(root100, "gaussian_noise", 1, num_classes=100)
    assert len(x) == 40 and int(y.max()) == 39


def test_pickled_arrays_are_refused_not_unpickled(tmp_path):
    root = _write_folder(tmp_path / "c10")
    np.save(root / "gaussian_noise.npy", np.array([{"payload": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="plain .npy"):
        load_official(root, "gaussian_noise", 1, num_classes=10)


def test_only_the_release_is_called_cifar_c():
    assert official_source_label(10) == "CIFAR-10-C"
    assert official_source_label(100) == "CIFAR-100-C"
