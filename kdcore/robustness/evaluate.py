"""Run every model on every (corruption, severity) cell and summarise the accuracy tables.

Each cell is built once (generated and cached, or read from the official arrays) and every model
then sees exactly the same corrupted images, batch by batch. With evaluate.max_images the cells hold
a class-balanced subset of the test set drawn with the fixed SUBSET_SEED (kdcore.data.splits), so every
model, job and run on the same data is scored on the same images; the clean accuracy that retention
and relative CE divide by is measured on those images too (`clean_acc_same_images`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from kdcore.atomic import atomic_path
from kdcore.cache_limit import mark_used
from kdcore.data.splits import SUBSET_SEED, balanced_subset
from kdcore.errors import Cancelled, DataError
from kdcore.evaluate import predict_logits
from kdcore.robustness.metrics import (
    ConfidenceBins,
    confidence_bins,
    negative_log_likelihood,
    summarize_accuracies,
)
from kdcore.robustness.official import load_official, official_folder, official_source_label
from kdcore.spec import EvaluateSpec

GENERATED_SOURCE = "CIFAR-C-like (generated)"
# Part of every cache key: bump it when the corruption functions change their output.
# 2: cells are keyed on the test-split positions of their images and seeded by them.
CACHE_VERSION = 2
# Images corrupted at once when evaluate.batch_size is unset (bounds memory; outputs do not depend on it).
CORRUPT_BATCH = 500


def _cache_path(
    cache_dir: Path, fingerprint: str, name: str, severity: int, seed: int, image_ids: torch.Tensor
) -> Path:
    ids = hashlib.sha256(image_ids.cpu().to(torch.int64).numpy().tobytes()).hexdigest()
    key = json.dumps([CACHE_VERSION, fingerprint, name, severity, seed, ids])
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return Path(cache_dir) / "corruptions" / f"{name}-s{severity}-{digest}.safetensors"


def _read_cached(path: Path, shape: tuple[int, ...]) -> torch.Tensor | None:
    if not path.is_file():
        return None
    try:
        images = load_file(path)["images"]
    except Exception:  # a damaged file is regenerated, never trusted
        return None
    if tuple(images.shape) != shape or images.dtype != torch.uint8:
        return None
    mark_used(path)
    return images


def _write_atomic(path: Path, images: torch.Tensor) -> None:
    with atomic_path(path) as tmp:
        save_file({"images": images.contiguous()}, tmp)


def evaluation_subset(test_y: torch.Tensor, max_images: int | None) -> torch.Tensor:
    """Positions in the test set of the images the corruptions are evaluated on: all of them, or a
    class-balanced subset of max_images drawn with the fixed SUBSET_SEED."""
    if max_images is None or max_images >= len(test_y):
        return torch.arange(len(test_y))
    return balanced_subset(test_y, max_images, SUBSET_SEED)


def generated_cell(
    images: torch.Tensor, image_ids: torch.Tensor, name: str, severity: int, *, seed: int, batch_size: int,
    device: torch.device, cache_dir: Path, fingerprint: str,
) -> torch.Tensor:
    """The corrupted images (uint8, on device), from the disk cache when present. image_ids[i] is
    image i's position in the source's test split: it seeds the image's corruption and keys the cache."""
    from kdcore.robustness import corrupt  # at call time: kdcore.robustness imports this module

    path = _cache_path(cache_dir, fingerprint, name, severity, seed, image_ids)
    cached = _read_cached(path, tuple(images.shape))
    if cached is not None:
        return cached.to(device)
    parts = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].to(device)
        ids = image_ids[start:start + batch_size].to(device)
        parts.append(corrupt(batch, name, severity, seed=seed, indices=ids))
    out = torch.cat(parts)
    _write_atomic(path, out.cpu())
    return out


def evaluate_robustness(
    models: dict[str, nn.Module],
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    spec: EvaluateSpec,
    device: str | torch.device,
    cache_dir: Path,
    fingerprint: str,
    clean_acc: dict[str, float],
    test_index: torch.Tensor | None = None,
    should_cancel: Callable[[], bool] | None = None,
    on_cell: Callable[[int, int], None] | None = None,
    data_dir: Path | None = None,
) -> dict[str, dict]:
    """{model_name: block} with corruption_acc, mce, per_corruption, per_severity, clean_acc,
    clean_acc_same_images, robustness_retention, corrupted_ece, corrupted_nll, corrupted_reliability (the
    reliability diagram of every corrupted image; these three None when spec.calibration is off), source
    and n_images (images per cell). test_x is uint8 (N, C, H, W); test_index (default 0..N-1) is each
    image's position in the source's test split (ImageData.test_index): it seeds the generated corruptions
    and picks the official arrays' images. Models are moved to device and put in eval mode. Raises
    Cancelled when should_cancel() is true between cells. Official arrays are read from
    spec.official_root, else from data_dir/CIFAR-10-C (or CIFAR-100-C, by the class count).
    """
    names = spec.corruption_names()
    if not names or not models:
        return {}
    device = torch.device(device)
    cells = [(c, s) for c in names for s in spec.severities]
    official = spec.source == "official"
    chosen = evaluation_subset(test_y, spec.max_images)
    clean_x, y = test_x[chosen], test_y[chosen].cpu()
    image_ids = (torch.arange(len(test_x)) if test_index is None else test_index.cpu())[chosen]
    num_classes = 0
    if official:
        if tuple(test_x.shape[1:]) != (3, 32, 32):
            raise DataError(
                "evaluate.source 'official' needs 32x32 RGB images (CIFAR-10/100); "
                f"this dataset's images are {tuple(test_x.shape[1:])} (C, H, W)"
            )
        num_classes = _num_classes(models, test_x, mean, std, device)
        official_root = official_folder(spec.official_root, data_dir, num_classes)
    for model in models.values():
        model.to(device).eval()

    acc = {m: {c: {} for c in names} for m in models}
    ece = {m: [] for m in models}
    nll = {m: [] for m in models}
    pooled: dict[str, ConfidenceBins | None] = {m: None for m in models}
    for done, (name, severity) in enumerate(cells):
        if should_cancel is not None and should_cancel():
            raise Cancelled()
        if official:
            x, official_y = load_official(official_root, name, severity, num_classes=num_classes,
                                          indices=image_ids)
            _check_official_labels(official_y, y)
            x = x.to(device)
        else:
            x = generated_cell(clean_x, image_ids, name, severity, seed=spec.seed, device=device,
                               batch_size=spec.batch_size or CORRUPT_BATCH, cache_dir=cache_dir,
                               fingerprint=fingerprint)
        for model_name, model in models.items():
            logits = predict_logits(model, x, mean=mean, std=std, device=device, batch_size=spec.batch_size)
            acc[model_name][name][severity] = float((logits.argmax(1) == y).float().mean())
            if spec.calibration:
                bins = confidence_bins(logits, y)
                ece[model_name].append(bins.ece())
                nll[model_name].append(negative_log_likelihood(logits, y))
                pooled[model_name] = bins if pooled[model_name] is None else pooled[model_name] + bins
        if on_cell is not None:
            on_cell(done + 1, len(cells))

    source = official_source_label(num_classes) if official else GENERATED_SOURCE
    blocks = {}
    for model_name, model in models.items():
        clean = clean_acc.get(model_name)
        same = clean if len(chosen) == len(test_x) else _clean_acc(model, clean_x, y, mean, std, device, spec)
        block = {"source": source, "n_images": len(chosen), "clean_acc": clean, "clean_acc_same_images": same}
        block.update(summarize_accuracies(acc[model_name], same))
        # Every cell has n_images images, so the mean of per-cell NLLs is the per-image mean.
        block["corrupted_ece"] = sum(ece[model_name]) / len(cells) if spec.calibration else None
        block["corrupted_nll"] = sum(nll[model_name]) / len(cells) if spec.calibration else None
        block["corrupted_reliability"] = pooled[model_name].reliability() if spec.calibration else None
        blocks[model_name] = block
    return blocks


def _clean_acc(model, x, y, mean, std, device, spec: EvaluateSpec) -> float:
    """Clean top-1 on the images the cells were made from: retention and relative CE must compare like
    with like when max_images leaves out part of the test set."""
    logits = predict_logits(model, x, mean=mean, std=std, device=device, batch_size=spec.batch_size)
    return float((logits.argmax(1) == y).float().mean())


def _check_official_labels(official_y: torch.Tensor, test_y: torch.Tensor) -> None:
    """The official arrays follow the CIFAR test order: their labels at the chosen positions must be
    the data set's own test labels, or every cell would score other images than the clean ones."""
    wrong = int((official_y != test_y).sum())
    if wrong:
        raise DataError(
            f"evaluate.official_root: the labels of the official arrays differ from the data set's test labels at "
            f"{wrong} of {len(test_y)} images; the official arrays must follow this data set's test order "
            "(CIFAR-10-C with cifar10, CIFAR-100-C with cifar100)"
        )


@torch.inference_mode()
def _num_classes(models: dict[str, nn.Module], test_x, mean, std, device: torch.device) -> int:
    """Class count from the first model's logits width: the official labels must match it."""
    model = next(iter(models.values())).to(device).eval()
    return predict_logits(model, test_x[:1], mean=mean, std=std, device=device).shape[1]
