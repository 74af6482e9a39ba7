"""evaluate_robustness on tiny models and a dozen images: results, the disk cache, cancel, official."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from kdcore.data.splits import SUBSET_SEED, balanced_subset
from kdcore.errors import Cancelled, DataError
from kdcore.robustness import corrupt
from kdcore.robustness.evaluate import GENERATED_SOURCE, evaluate_robustness
from kdcore.robustness.metrics import expected_calibration_error, negative_log_likelihood
from kdcore.spec import EvaluateSpec

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
CELLS = {"corruptions": ["gaussian_noise", "contrast"], "severities": [2, 5]}


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 10)
    )


def _data(n=14):
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen), torch.arange(n) % 10


def _reference_logits(model, x_uint8):
    """Unbatched, uncached, fp32: what a reader would write by hand."""
    x = (x_uint8.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return model.eval()(x)


def _reliability_by_hand(logits, labels, bins=15):
    """Equal-width (lo, hi] bins over max-softmax confidence, in numpy."""
    probs = torch.softmax(logits.double(), 1).numpy()
    conf, right = probs.max(1), probs.argmax(1) == labels.numpy()
    index = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    count = [int((index == b).sum()) for b in range(bins)]
    return {"count": count,
            "confidence": [float(conf[index == b].mean()) if count[b] else None for b in range(bins)],
            "accuracy": [float(right[index == b].mean()) if count[b] else None for b in range(bins)]}


def _run(tmp_path, spec, models, x, y, **kwargs):
    return evaluate_robustness(
        models, x, y, mean=MEAN, std=STD, spec=spec, device="cpu", cache_dir=tmp_path / "cache",
        fingerprint="fp-test", clean_acc={name: 0.5 for name in models}, **kwargs,
    )


def test_blocks_match_a_hand_written_evaluation(tmp_path):
    x, y = _data()
    models = {"teacher": _model(0), "student_kd": _model(1)}
    models["student_kd"].train()
    spec = EvaluateSpec(**CELLS, max_images=11, batch_size=4)  # 11 = two full batches + a partial one
    progress = []
    # The images' positions in the source's test split: they seed each image's corruption.
    test_index = torch.arange(100, 100 + len(x))
    blocks = _run(tmp_path, spec, models, x, y, test_index=test_index,
                  on_cell=lambda done, total: progress.append((done, total)))
    assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert set(blocks) == {"teacher", "student_kd"} and not models["student_kd"].training
    chosen = balanced_subset(y, 11, SUBSET_SEED)
    assert sorted(set(y[chosen].tolist())) == list(range(10))  # first-11 would be the same here; see below
    for name, model in models.items():
        block, accs, eces, nlls, all_logits = blocks[name], [], [], [], []
        for c in CELLS["corruptions"]:
            for s in CELLS["severities"]:
                cell = corrupt(x[chosen], c, s, seed=0, indices=test_index[chosen])
                logits = _reference_logits(model, cell)
                all_logits.append(logits)
                acc = float((logits.argmax(1) == y[chosen]).float().mean())
                assert block["per_corruption"][c][str(s)] == pytest.approx(acc)
                accs.append(acc)
                eces.append(expected_calibration_error(logits, y[chosen]))
                nlls.append(negative_log_likelihood(logits, y[chosen]))
        assert block["corruption_acc"] == pytest.approx(np.mean(accs))
        assert block["mce"] == pytest.approx(100 - 100 * np.mean(accs))
        # Retention divides by the clean accuracy on the same 11 images, not by the test set's (0.5 here).
        same = float((_reference_logits(model, x[chosen]).argmax(1) == y[chosen]).float().mean())
        assert block["clean_acc_same_images"] == pytest.approx(same) and block["clean_acc"] == 0.5
        assert block["robustness_retention"] == pytest.approx(np.mean(accs) / same)
        assert block["corrupted_ece"] == pytest.approx(np.mean(eces), abs=1e-5)
        assert block["corrupted_nll"] == pytest.approx(np.mean(nlls), rel=1e-4)
        # The reliability diagram pools every corrupted image of every cell.
        by_hand = _reliability_by_hand(torch.cat(all_logits), y[chosen].repeat(len(all_logits)))
        assert block["corrupted_reliability"]["count"] == by_hand["count"] and sum(by_hand["count"]) == 44
        for key in ("confidence", "accuracy"):
            assert block["corrupted_reliability"][key] == pytest.approx(by_hand[key], abs=1e-5)
        assert block["source"] == GENERATED_SOURCE and block["n_images"] == 11
        assert set(block["per_severity"]) == {"2", "5"}


def test_generated_cells_are_cached_and_reused_by_a_second_job(tmp_path):
    x, y = _data()
    models = {"student_kd": _model(1)}
    spec = EvaluateSpec(**CELLS, max_images=10)
    first = _run(tmp_path, spec, models, x, y)
    files = sorted((tmp_path / "cache" / "corruptions").glob("*.safetensors"))
    assert len(files) == 4 and not list(files[0].parent.glob("*.tmp"))
    # Replace one cached cell by the clean images: a job that reuses the cache must now score them.
    target = next(f for f in files if f.name.startswith("contrast-s5-"))
    chosen = balanced_subset(y, 10, SUBSET_SEED)
    save_file({"images": x[chosen].clone()}, target)
    second = _run(tmp_path, spec, models, x, y)
    clean = float((_reference_logits(models["student_kd"], x[chosen]).argmax(1) == y[chosen]).float().mean())
    assert second["student_kd"]["per_corruption"]["contrast"]["5"] == pytest.approx(clean)
    assert second["student_kd"]["per_corruption"]["gaussian_noise"] == first["student_kd"]["per_corruption"][
        "gaussian_noise"
    ]
    # Another seed, another image count or other test-split positions is another key: new files.
    _run(tmp_path, EvaluateSpec(**CELLS, max_images=10, seed=1), models, x, y)
    _run(tmp_path, EvaluateSpec(**CELLS, max_images=12), models, x, y)
    _run(tmp_path, spec, models, x, y, test_index=torch.arange(len(x)) + 1)
    assert len(list(target.parent.glob("*.safetensors"))) == 16


def test_a_damaged_cache_file_is_regenerated(tmp_path):
    x, y = _data()
    spec = EvaluateSpec(corruptions=["gaussian_noise"], severities=[3], max_images=6)
    first = _run(tmp_path, spec, {"m": _model(2)}, x, y)
    (path,) = (tmp_path / "cache" / "corruptions").glob("*.safetensors")
    path.write_bytes(b"not a safetensors file")
    assert _run(tmp_path, spec, {"m": _model(2)}, x, y) == first


def test_cancel_is_honoured_between_cells(tmp_path):
    x, y = _data()
    progress = []
    with pytest.raises(Cancelled):
        _run(tmp_path, EvaluateSpec(**CELLS, max_images=4), {"m": _model(0)}, x, y,
             should_cancel=lambda: len(progress) >= 1, on_cell=lambda d, t: progress.append(d))
    assert progress == [1]


def test_no_corruptions_and_no_calibration(tmp_path):
    x, y = _data()
    assert _run(tmp_path, EvaluateSpec(corruptions="none"), {"m": _model(0)}, x, y) == {}
    spec = EvaluateSpec(**CELLS, max_images=4, calibration=False)
    block = _run(tmp_path, spec, {"m": _model(0)}, x, y)["m"]
    assert block["corrupted_ece"] is None and block["corrupted_nll"] is None
    assert block["corrupted_reliability"] is None


def _official_folder(root, test_y, per_severity):
    """A folder in the published layout whose labels follow the test order, as the release's do."""
    root.mkdir()
    gen = np.random.default_rng(0)
    images = {c: gen.integers(0, 256, (5 * per_severity, 32, 32, 3), dtype=np.uint8) for c in CELLS["corruptions"]}
    for c, arr in images.items():
        np.save(root / f"{c}.npy", arr)
    labels = np.zeros(per_severity, dtype=np.int64)
    labels[: len(test_y)] = test_y.numpy()
    labels[-1] = 9  # the release's labels span every class
    np.save(root / "labels.npy", np.tile(labels, 5))
    return images, np.tile(labels, 5)


def test_official_arrays_are_read_at_the_test_images_positions(tmp_path):
    """The data set is a subset of the test split (test_index) and max_images takes a balanced subset
    of it: the official cells must hold the same images, and clean_acc_same_images is their clean score."""
    full_x, full_y = _data(n=20)
    test_index = torch.tensor([1, 2, 4, 5, 7, 8, 10, 11, 13, 14, 16, 17, 19])
    x, y = full_x[test_index], full_y[test_index]
    images, labels = _official_folder(tmp_path / "CIFAR-10-C", full_y, per_severity=24)
    model = _model(3)
    spec = EvaluateSpec(**CELLS, source="official", official_root=str(tmp_path / "CIFAR-10-C"), max_images=6)
    block = _run(tmp_path, spec, {"m": model}, x, y, test_index=test_index)["m"]
    chosen = balanced_subset(y, 6, SUBSET_SEED)
    rows = 4 * 24 + test_index[chosen].numpy()  # severity 5
    assert block["source"] == "CIFAR-10-C" and block["n_images"] == 6
    cell = torch.from_numpy(images["contrast"][rows]).permute(0, 3, 1, 2)
    assert torch.equal(torch.from_numpy(labels[rows]), y[chosen])
    acc = float((_reference_logits(model, cell).argmax(1) == y[chosen]).float().mean())
    assert block["per_corruption"]["contrast"]["5"] == pytest.approx(acc)
    same = float((_reference_logits(model, x[chosen]).argmax(1) == y[chosen]).float().mean())
    assert block["clean_acc_same_images"] == pytest.approx(same)
    with pytest.raises(DataError, match="32x32 RGB"):
        _run(tmp_path, spec, {"m": model}, torch.zeros(4, 1, 28, 28, dtype=torch.uint8), y[:4])
    # The service names no folder: the arrays come from its data folder, under the release's own name.
    from_data_dir = _run(tmp_path, EvaluateSpec(**CELLS, source="official", max_images=6), {"m": model}, x, y,
                         data_dir=tmp_path, test_index=test_index)["m"]
    assert from_data_dir["per_corruption"] == block["per_corruption"]
    with pytest.raises(DataError, match="official_root"):
        _run(tmp_path, EvaluateSpec(**CELLS, source="official"), {"m": model}, x, y)


def test_official_arrays_must_follow_the_data_sets_test_order(tmp_path):
    x, y = _data()
    _official_folder(tmp_path / "c10", torch.roll(y, 1), per_severity=16)  # another order
    spec = EvaluateSpec(**CELLS, source="official", official_root=str(tmp_path / "c10"))
    with pytest.raises(DataError, match="evaluate.official_root.*differ from the data set's test labels"):
        _run(tmp_path, spec, {"m": _model(0)}, x, y)
    # A 100-class model (CIFAR-100 data) with CIFAR-10-C arrays: the class counts disagree.
    wide = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 100))
    with pytest.raises(DataError, match="evaluate.official_root.*100 classes"):
        _run(tmp_path, spec, {"m": wide}, x, y)
    # Arrays with fewer images per severity than the test split reaches.
    _official_folder(tmp_path / "short", y[:10], per_severity=11)
    spec = EvaluateSpec(**CELLS, source="official", official_root=str(tmp_path / "short"))
    with pytest.raises(DataError, match="11 images per severity"):
        _run(tmp_path, spec, {"m": _model(0)}, x, y)
