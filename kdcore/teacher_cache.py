"""Trained teachers shared between runs: <cache_dir>/teachers/<key>.safetensors and <key>.json.

Training a teacher is a function of (data, arch, recipe), so a job that would train the same teacher as
an earlier one loads it instead: comparing distillation methods or students against one teacher trains
it once. The key holds the data fingerprint (source, split, subset, split seed, size), the arch and the
whole recipe; changing any of them trains a new teacher. Files are written atomically (temp file +
rename): two jobs training the same teacher at once both train, and either file is a valid result.

A teacher's evaluation is cached too, in <cache_dir>/teacher_evaluations/<key>.json: the key holds the
teacher's weights (a digest of the tensors, so a teacher from the cache, from a given weights file or
retrained to the same weights all match), the data fingerprint and every evaluation setting that changes
a number. Evaluating the largest model on every corrupted test set then happens once, not once per job.

Each load marks its files used (kdcore.cache_limit): a size-limited cache removes the least recently used.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from kdcore.atomic import atomic_path
from kdcore.cache_limit import mark_used
from kdcore.errors import WeightsError
from kdcore.export import ModelCard, load_weights_into, save_safetensors
from kdcore.robustness.evaluate import CACHE_VERSION as CORRUPTION_CACHE_VERSION
from kdcore.spec import EvaluateSpec, TrainRecipe

# Part of every key: bump it when a model's definition or the trainer changes what a recipe produces.
CACHE_VERSION = 1
# Part of every evaluation key: bump it when a metric's definition or the evaluation code changes a number.
EVALUATION_VERSION = 1


def teacher_key(fingerprint: str, arch: str, recipe: TrainRecipe) -> str:
    material = json.dumps([CACHE_VERSION, fingerprint, arch, recipe.model_dump(mode="json")], sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def _paths(cache_dir: Path, key: str) -> tuple[Path, Path]:
    root = Path(cache_dir) / "teachers"
    return root / f"{key}.safetensors", root / f"{key}.json"


def load_cached_teacher(cache_dir: Path, key: str, model: nn.Module) -> dict | None:
    """Load the cached weights into model and return the training summary, or None (absent or damaged:
    the caller trains, and the new teacher replaces the damaged files)."""
    weights, summary = _paths(cache_dir, key)
    if not (weights.is_file() and summary.is_file()):
        return None
    try:
        info = json.loads(summary.read_text())
        load_weights_into(model, weights)
    except (OSError, ValueError, WeightsError):
        return None
    mark_used(weights, summary)
    return info


def _write_atomic(target: Path, write: Callable[[Path], object]) -> None:
    with atomic_path(target) as tmp:
        write(tmp)


def store_teacher(cache_dir: Path, key: str, model: nn.Module, card: ModelCard, summary: dict) -> None:
    weights, summary_path = _paths(cache_dir, key)
    _write_atomic(weights, lambda tmp: save_safetensors(model, card, tmp))
    _write_atomic(summary_path, lambda tmp: tmp.write_text(json.dumps(summary)))


def weights_digest(model: nn.Module) -> str:
    """sha256 of the state dict (names, dtypes, shapes and bytes): equal digests, equal weights. Hashes
    the tensors rather than a file, whose header order need not be stable."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def evaluation_key(teacher_digest: str, arch: str, fingerprint: str, evaluate: EvaluateSpec) -> str:
    """What the teacher's evaluation numbers depend on (latency is measured afresh, so not its settings)."""
    settings = {
        "corruptions": evaluate.corruption_names(), "severities": evaluate.severities,
        "source": evaluate.source, "official_root": evaluate.official_root if evaluate.source == "official" else None,
        "max_images": evaluate.max_images, "seed": evaluate.seed, "calibration": evaluate.calibration,
    }
    material = json.dumps([EVALUATION_VERSION, CORRUPTION_CACHE_VERSION, teacher_digest, arch, fingerprint,
                           settings], sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def _evaluation_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / "teacher_evaluations" / f"{key}.json"


def load_teacher_evaluation(cache_dir: Path, key: str) -> dict | None:
    """The stored evaluation block, or None (absent or unreadable: the caller evaluates again)."""
    path = _evaluation_path(cache_dir, key)
    try:
        block = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not (isinstance(block, dict) and "clean_acc" in block):
        return None
    mark_used(path)
    return block


def store_teacher_evaluation(cache_dir: Path, key: str, block: dict) -> None:
    _write_atomic(_evaluation_path(cache_dir, key), lambda tmp: tmp.write_text(json.dumps(block)))
