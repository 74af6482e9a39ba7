"""evaluate_robustness on tiny models and a dozen images: results, the disk cache, cancel, official."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

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
    blocks = _run(tmp_path, spec, models, x, y, on_cell=lambda done, total: progress.append((done, total)))
    assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert set(blocks) == {"teacher", "student_kd"} and not models["student_kd"].training
    for name, model in models.items():
        block, accs, eces, nlls = blocks[name], [], [], []
        for c in CELLS["corruptions"]:
            for s in CELLS["severities"]:
                cell = corrupt(x[:11], c, s, seed=0, indices=torch.arange(11))
                logits = _reference_logits(model, cell)
                acc = float((logits.argmax(1) == y[:11]).float().mean())
                assert block["per_corruption"][c][str(s)] == pytest.approx(acc)
                accs.append(acc)
                eces.append(expected_calibration_error(logits, y[:11]))
                nlls.append(negative_log_likelihood(logits, y[:11]))
        assert block["corruption_acc"] == pytest.approx(np.mean(accs))
        assert block["mce"] == pytest.approx(100 - 100 * np.mean(accs))
        # Retention divides by the clean accuracy on the same 11 images, not by the test set's (0.5 here).
        same = float((_reference_logits(model, x[:11]).argmax(1) == y[:11]).float().mean())
        assert block["clean_acc_same_images"] == pytest.approx(same) and block["clean_acc"] == 0.5
        assert block["robustness_retention"] == pytest.approx(np.mean(accs) / same)
        assert block["corrupted_ece"] == pytest.approx(np.mean(eces), abs=1e-5)
        assert block["corrupted_nll"] == pytest.approx(np.mean(nlls), rel=1e-4)
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
    save_file({"images": x[:10].clone()}, target)
    second = _run(tmp_path, spec, models, x, y)
    clean = float((_reference_logits(models["student_kd"], x[:10]).argmax(1) == y[:10]).float().mean())
    assert second["student_kd"]["per_corruption"]["contrast"]["5"] == pytest.approx(clean)
    assert second["student_kd"]["per_corruption"]["gaussian_noise"] == first["student_kd"]["per_corruption"][
        "gaussian_noise"
    ]
    # Another seed or another image count is another key: new files, the old ones untouched.
    _run(tmp_path, EvaluateSpec(**CELLS, max_images=10, seed=1), models, x, y)
    _run(tmp_path, EvaluateSpec(**CELLS, max_images=12), models, x, y)
    assert len(list(target.parent.glob("*.safetensors"))) == 12


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


def test_official_arrays(tmp_path):
    root = tmp_path / "CIFAR-10-C"
    root.mkdir()
    gen = np.random.default_rng(0)
    images = {c: gen.integers(0, 256, (15, 32, 32, 3), dtype=np.uint8) for c in CELLS["corruptions"]}
    for c, arr in images.items():
        np.save(root / f"{c}.npy", arr)  # 3 images per severity
    labels = np.array([0, 9, 4] * 5, dtype=np.int64)
    np.save(root / "labels.npy", labels)
    x, y = _data()
    model = _model(3)
    spec = EvaluateSpec(**CELLS, source="official", official_root=str(root), max_images=2)
    block = _run(tmp_path, spec, {"m": model}, x, y)["m"]
    assert block["source"] == "CIFAR-10-C" and block["n_images"] == 2
    cell = torch.from_numpy(images["contrast"][12:14]).permute(0, 3, 1, 2)  # severity 5, first 2
    acc = float((_reference_logits(model, cell).argmax(1) == torch.from_numpy(labels[12:14])).float().mean())
    assert block["per_corruption"]["contrast"]["5"] == pytest.approx(acc)
    with pytest.raises(DataError, match="32x32 RGB"):
        _run(tmp_path, spec, {"m": model}, torch.zeros(4, 1, 28, 28, dtype=torch.uint8), y[:4])
    # The service names no folder: the arrays come from its data folder, under the release's own name.
    from_data_dir = _run(tmp_path, EvaluateSpec(**CELLS, source="official", max_images=2), {"m": model}, x, y,
                         data_dir=tmp_path)["m"]
    assert from_data_dir["per_corruption"] == block["per_corruption"]
    with pytest.raises(DataError, match="official_root"):
        _run(tmp_path, EvaluateSpec(**CELLS, source="official"), {"m": model}, x, y)
