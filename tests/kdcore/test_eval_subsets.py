"""Evaluation subsets (dataset.test_subset, evaluate.max_images) are class-balanced and seeded.

Image folders store their test set grouped by class, so "the first N images" would evaluate a few
classes only; these tests use such a folder (10 classes, PNGs written here) to show every class is
in every subset, in equal shares, and that every model and every run sees the same images.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from kdcore.data import load_dataset
from kdcore.data.splits import balanced_subset
from kdcore.robustness.evaluate import evaluate_robustness, evaluation_subset
from kdcore.spec import DatasetSpec, EvaluateSpec

CLASSES = 10
PER_CLASS = 20  # 10 train + 10 test images per class
UNIT = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # mean, std: the models see pixel / 255


def _class_value(k: int) -> int:
    return 10 + 24 * k  # the grey level that marks class k


@pytest.fixture(scope="module")
def class_sorted_folder(tmp_path_factory) -> Path:
    """root/{train,test}/c<k>/ of 8x8 RGB PNGs whose grey level (plus noise) tells the class."""
    root = tmp_path_factory.mktemp("sorted")
    rng = np.random.default_rng(0)
    for k in range(CLASSES):
        for i in range(PER_CLASS):
            split = "test" if i < PER_CLASS // 2 else "train"
            folder = root / split / f"c{k}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = _class_value(k) + rng.integers(-3, 4, (8, 8, 3))
            Image.fromarray(pixels.astype(np.uint8), "RGB").save(folder / f"{i:02d}.png")
    return root


class ReadsTheGreyLevel(nn.Module):
    """Predicts the class from the mean grey level; deliberately wrong for classes 5..9, so its clean
    accuracy is the share of classes 0..4 in whatever images it is given."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))  # a parameter, so .to(device) has something to move

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        level = x.mean(dim=(1, 2, 3)) * 255 * self.scale
        k = ((level - 10) / 24).round().clamp(0, CLASSES - 1).long()
        predicted = torch.where(k < 5, k, (k + 1) % CLASSES)
        return nn.functional.one_hot(predicted, CLASSES).float() * 10


class Recorder(nn.Module):
    """A linear model that keeps every batch it is shown."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.linear = nn.Linear(3 * 8 * 8, CLASSES)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().cpu().clone())
        return self.linear(x.flatten(1))


def _load(root: Path, cache: Path, split_seed: int = 0, **options):
    spec = DatasetSpec(source="imagefolder", root=str(root), split_seed=split_seed, **options)
    return load_dataset(spec, cache_dir=cache)


def _evaluate(data, models, cache: Path, **spec):
    return evaluate_robustness(
        models, data.test_x, data.test_y, mean=UNIT[0], std=UNIT[1],
        spec=EvaluateSpec(corruptions=["gaussian_noise", "contrast"], severities=[1], **spec),
        device="cpu", cache_dir=cache, fingerprint=data.fingerprint,
        clean_acc={name: None for name in models}, test_index=data.test_index,
    )


def test_balanced_subset_shares_equally_as_far_as_the_counts_allow():
    labels = torch.tensor([0] * 30 + [1] * 2 + [2] * 7 + [3] * 30)
    chosen = balanced_subset(labels, 21, seed=4)
    # Class 1 gives all it has (2); the other 19 go 6/6/7 or so among classes 0, 2 and 3.
    counts = Counter(labels[chosen].tolist())
    assert counts[1] == 2 and sum(counts.values()) == 21
    assert max(counts[c] for c in (0, 2, 3)) - min(counts[c] for c in (0, 2, 3)) <= 1
    assert torch.equal(chosen, torch.sort(chosen).values) and len(set(chosen.tolist())) == 21
    assert torch.equal(chosen, balanced_subset(labels, 21, seed=4))
    assert not torch.equal(chosen, balanced_subset(labels, 21, seed=5))
    assert torch.equal(balanced_subset(labels, 500, seed=4), torch.arange(len(labels)))


def test_test_subset_keeps_every_class_in_equal_shares(class_sorted_folder, tmp_path):
    full = _load(class_sorted_folder, tmp_path)
    assert full.test_y.tolist() == sorted(full.test_y.tolist())  # grouped by class: the trap
    data = _load(class_sorted_folder, tmp_path, test_subset=30)
    assert Counter(data.test_y.tolist()) == {k: 3 for k in range(CLASSES)}
    assert torch.equal(data.test_x, full.test_x[data.test_index])
    assert len(set(data.test_index.tolist())) == 30


@pytest.mark.parametrize(("test_subset", "max_images"), [(None, 40), (None, 25), (60, 30)])
def test_max_images_evaluates_every_class_in_equal_shares(class_sorted_folder, tmp_path, test_subset, max_images):
    data = _load(class_sorted_folder, tmp_path, test_subset=test_subset)
    chosen = evaluation_subset(data.test_y, max_images)
    counts = Counter(data.test_y[chosen].tolist())
    assert set(counts) == set(range(CLASSES)) and sum(counts.values()) == max_images
    assert max(counts.values()) - min(counts.values()) <= 1
    # End to end: the model is right on classes 0..4 only, so on a class-balanced subset its clean
    # accuracy is the share of those classes (the first 40 images would have given 1.0: classes 0..3).
    block = _evaluate(data, {"m": ReadsTheGreyLevel()}, tmp_path / "cache", max_images=max_images)["m"]
    share = sum(counts[k] for k in range(5)) / max_images
    assert block["n_images"] == max_images and block["clean_acc_same_images"] == pytest.approx(share)
    assert abs(share - 0.5) <= 0.5 / CLASSES * 2


def test_every_model_and_every_run_sees_the_same_images(class_sorted_folder, tmp_path):
    """Two runs (other split seeds, so other train/val splits and fingerprints) and two models each:
    every model of every run is shown exactly the same clean and corrupted images."""
    seen = []
    for seed in (0, 1):
        data = _load(class_sorted_folder, tmp_path, split_seed=seed, test_subset=60)
        models = {"a": Recorder(0), "b": Recorder(1)}
        _evaluate(data, models, tmp_path / f"cache{seed}", max_images=20)
        for model in models.values():
            seen.append(torch.cat(model.seen))
    assert seen[0].shape[0] == 2 * 20 + 20  # two cells, then the clean images for clean_acc_same_images
    assert all(torch.equal(seen[0], other) for other in seen[1:])
