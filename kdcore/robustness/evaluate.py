"""Run every model on every (corruption, severity) cell and summarise the accuracy tables.

Each cell is built once (generated and cached, or read from the official arrays) and every model
then sees exactly the same corrupted images, batch by batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from kdcore.errors import Cancelled, DataError
from kdcore.evaluate import predict_logits
from kdcore.robustness.metrics import (
    expected_calibration_error,
    negative_log_likelihood,
    summarize_accuracies,
)
from kdcore.robustness.official import load_official, official_folder, official_source_label
from kdcore.spec import EvaluateSpec

GENERATED_SOURCE = "CIFAR-C-like (generated)"
# Part of every cache key: bump it when the corruption functions change their output.
CACHE_VERSION = 1
# Images corrupted at once when evaluate.batch_size is unset (bounds memory; outputs do not depend on it).
CORRUPT_BATCH = 500


def _cache_path(
    cache_dir: Path, fingerprint: str, name: str, severity: int, seed: int, n: int | None
) -> Path:
    key = json.dumps([CACHE_VERSION, fingerprint, name, severity, seed, n])
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return Path(cache_dir) / "corruptions" / f"{name}-s{severity}-{digest}.safetensors"


def _read_cached(path: Path, shape: tuple[int, ...]) -> torch.Tensor | None:
    if not path.is_file():
        return None
    try:
        images = load_file(path)["images"]
    except Exception:  # a damaged file is regenerated, never trusted
        return None
    return images if tuple(images.shape) == shape and images.dtype == torch.uint8 else None


def _write_atomic(path: Path, images: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file({"images": images.contiguous()}, tmp)
        os.replace(tmp, path)  # readers see the old file or the whole new one, never half
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def generated_cell(
    test_x: torch.Tensor, name: str, severity: int, *, seed: int, batch_size: int,
    device: torch.device, cache_dir: Path, fingerprint: str, max_images: int | None,
) -> torch.Tensor:
    """The corrupted first-n test images (uint8, on device), from the disk cache when present."""
    from kdcore.robustness import corrupt  # at call time: kdcore.robustness imports this module

    x = test_x if max_images is None else test_x[:max_images]
    path = _cache_path(cache_dir, fingerprint, name, severity, seed, max_images)
    cached = _read_cached(path, tuple(x.shape))
    if cached is not None:
        return cached.to(device)
    parts = []
    for start in range(0, len(x), batch_size):
        batch = x[start:start + batch_size].to(device)
        indices = torch.arange(start, start + len(batch), device=device)  # the image's test-set index
        parts.append(corrupt(batch, name, severity, seed=seed, indices=indices))
    images = torch.cat(parts)
    _write_atomic(path, images.cpu())
    return images


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
    should_cancel: Callable[[], bool] | None = None,
    on_cell: Callable[[int, int], None] | None = None,
    data_dir: Path | None = None,
) -> dict[str, dict]:
    """{model_name: block} with corruption_acc, mce, per_corruption, per_severity, clean_acc,
    robustness_retention, corrupted_ece, corrupted_nll (None when spec.calibration is off), source
    and n_images (images per cell). test_x is uint8 (N, C, H, W); models are moved to device and
    put in eval mode. Raises Cancelled when should_cancel() is true between cells. Official arrays are
    read from spec.official_root, else from data_dir/CIFAR-10-C (or CIFAR-100-C, by the class count).
    """
    names = spec.corruption_names()
    if not names or not models:
        return {}
    device = torch.device(device)
    cells = [(c, s) for c in names for s in spec.severities]
    official = spec.source == "official"
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
    n_images = 0
    for done, (name, severity) in enumerate(cells):
        if should_cancel is not None and should_cancel():
            raise Cancelled()
        if official:
            x, y = load_official(official_root, name, severity, num_classes=num_classes,
                                 max_images=spec.max_images)
            x = x.to(device)
        else:
            x = generated_cell(test_x, name, severity, seed=spec.seed, batch_size=spec.batch_size or CORRUPT_BATCH,
                               device=device, cache_dir=cache_dir, fingerprint=fingerprint,
                               max_images=spec.max_images)
            y = test_y[: len(x)].cpu()
        n_images = len(x)
        for model_name, model in models.items():
            logits = predict_logits(model, x, mean=mean, std=std, device=device, batch_size=spec.batch_size)
            acc[model_name][name][severity] = float((logits.argmax(1) == y).float().mean())
            if spec.calibration:
                ece[model_name].append(expected_calibration_error(logits, y))
                nll[model_name].append(negative_log_likelihood(logits, y))
        if on_cell is not None:
            on_cell(done + 1, len(cells))

    source = official_source_label(num_classes) if official else GENERATED_SOURCE
    blocks = {}
    for model_name, model in models.items():
        clean = clean_acc.get(model_name)
        same = None if official else _clean_acc_first(model, test_x, test_y, n_images, clean, mean, std, device, spec)
        block = {"source": source, "n_images": n_images, "clean_acc": clean, "clean_acc_same_images": same}
        block.update(summarize_accuracies(acc[model_name], clean if same is None else same))
        # Every cell has n_images images, so the mean of per-cell NLLs is the per-image mean.
        block["corrupted_ece"] = sum(ece[model_name]) / len(cells) if spec.calibration else None
        block["corrupted_nll"] = sum(nll[model_name]) / len(cells) if spec.calibration else None
        blocks[model_name] = block
    return blocks


def _clean_acc_first(model, test_x, test_y, n, clean, mean, std, device, spec: EvaluateSpec) -> float | None:
    """Clean top-1 on the first n test images, the ones the generated cells corrupt: retention and
    relative CE must compare like with like when max_images leaves out part of the test set."""
    if n == len(test_x):
        return clean
    logits = predict_logits(model, test_x[:n], mean=mean, std=std, device=device, batch_size=spec.batch_size)
    return float((logits.argmax(1) == test_y[:n].cpu()).float().mean())


@torch.inference_mode()
def _num_classes(models: dict[str, nn.Module], test_x, mean, std, device: torch.device) -> int:
    """Class count from the first model's logits width: the official labels must match it."""
    model = next(iter(models.values())).to(device).eval()
    return predict_logits(model, test_x[:1], mean=mean, std=std, device=device).shape[1]
