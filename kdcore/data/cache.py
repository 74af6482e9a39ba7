"""On-disk cache of decoded data sets: cache_dir/data/<fingerprint>.safetensors.

One safetensors file holds train_x, train_y, test_x, test_y; the class names travel as JSON in the
file's metadata header (instead of a sidecar file), so one os.replace publishes everything at once
and a reader never sees tensors without their classes. Nothing is pickled.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from kdcore.atomic import atomic_path
from kdcore.cache_limit import mark_used

FORMAT = "kdcore-data-1"
KEYS = ("train_x", "train_y", "test_x", "test_y")


def cache_path(cache_dir: Path, fingerprint: str) -> Path:
    return Path(cache_dir) / "data" / f"{fingerprint}.safetensors"


def read_cache(path: Path) -> tuple[dict[str, torch.Tensor], list[str]] | None:
    """The cached arrays and classes, or None when the file is missing or unreadable (then rebuild)."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                return None
            tensors = {k: f.get_tensor(k) for k in KEYS}
        classes = json.loads(meta["classes"])
    except Exception:  # a truncated or foreign file is just a cache miss
        return None
    mark_used(path)
    return tensors, classes


def write_cache(path: Path, tensors: dict[str, torch.Tensor], classes: list[str]) -> None:
    """Write atomically (kdcore.atomic): readers never see half a file."""
    with atomic_path(path) as tmp:
        save_file({k: tensors[k].contiguous() for k in KEYS}, tmp,
                  metadata={"format": FORMAT, "classes": json.dumps(classes)})
