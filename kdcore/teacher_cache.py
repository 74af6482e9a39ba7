"""Trained teachers shared between runs: <cache_dir>/teachers/<key>.safetensors and <key>.json.

Training a teacher is a function of (data, arch, recipe), so a job that would train the same teacher as
an earlier one loads it instead: comparing distillation methods or students against one teacher trains
it once. The key holds the data fingerprint (source, split, subset, seed, size), the arch and the whole
recipe; changing any of them trains a new teacher. Files are written atomically (temp file + rename):
two jobs training the same teacher at once both train, and either file is a valid result.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from torch import nn

from kdcore.errors import WeightsError
from kdcore.export import ModelCard, load_weights_into, save_safetensors
from kdcore.spec import TrainRecipe

# Part of every key: bump it when a model's definition or the trainer changes what a recipe produces.
CACHE_VERSION = 1


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
    return info


def store_teacher(cache_dir: Path, key: str, model: nn.Module, card: ModelCard, summary: dict) -> None:
    weights, summary_path = _paths(cache_dir, key)
    weights.parent.mkdir(parents=True, exist_ok=True)
    for target, write in ((weights, lambda tmp: save_safetensors(model, card, tmp)),
                          (summary_path, lambda tmp: tmp.write_text(json.dumps(summary)))):
        fd, name = tempfile.mkstemp(dir=weights.parent, suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
        try:
            write(tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
