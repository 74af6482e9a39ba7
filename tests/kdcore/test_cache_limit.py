"""The size limit of kdcore's cache: least recently used entries go first, a teacher's two files together,
recent entries stay, and every real reader marks what it used."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from kdcore.cache_limit import prune_cache
from kdcore.cards import ModelCard
from kdcore.data.cache import cache_path, read_cache, write_cache
from kdcore.models import build_model
from kdcore.robustness.evaluate import generated_cell
from kdcore.teacher_cache import load_cached_teacher, load_teacher_evaluation, store_teacher, store_teacher_evaluation
from tests.paths import REPO

NOW = 1_900_000_000.0
HOUR = 3600.0


def _file(path: Path, size: int, hours_ago: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (NOW - hours_ago * HOUR, NOW - hours_ago * HOUR))
    return path


def test_the_least_recently_used_entries_go_first_until_the_cache_fits(tmp_path: Path):
    oldest = _file(tmp_path / "corruptions" / "fog-s1-aaa.safetensors", 100, 50)
    teachers = tmp_path / "teachers"
    teacher = [_file(teachers / "k1.safetensors", 300, 40), _file(teachers / "k1.json", 10, 2)]
    data = _file(tmp_path / "data" / "fp.safetensors", 200, 30)
    recent = _file(tmp_path / "teacher_evaluations" / "e1.json", 50, 0.1)
    outside = _file(tmp_path / "torchvision" / "cifar-10.tar.gz", 10_000, 100)  # not kdcore's to remove

    pruned = prune_cache(tmp_path, max_bytes=400, now=NOW)
    # 660 bytes over a limit of 400: the fog cell (used 50 h ago), then the data set (30 h ago) go; the
    # teacher, whose summary was read 2 h ago, counts as used then and stays.
    assert sorted(pruned.removed) == sorted([oldest, data])
    assert pruned.freed_bytes == 300 and pruned.kept_bytes == 360
    assert all(p.exists() for p in [*teacher, recent, outside])

    pruned = prune_cache(tmp_path, max_bytes=0, now=NOW)
    assert sorted(pruned.removed) == sorted(teacher)  # both files of the teacher, never one
    assert recent.exists() and pruned.kept_bytes == 50  # used in the last hour: kept even over the limit
    assert outside.exists()


def test_interrupted_writes_are_removed_after_a_day(tmp_path: Path):
    stale = _file(tmp_path / "data" / ".fp.safetensors.abc.tmp", 10, 25)
    fresh = _file(tmp_path / "data" / ".fp.safetensors.def.tmp", 10, 1)  # perhaps being written now
    assert prune_cache(tmp_path, max_bytes=10**9, now=NOW).removed == [stale]
    assert fresh.exists()


def _age(*paths: Path) -> None:
    for path in paths:
        os.utime(path, (time.time() - 10 * HOUR, time.time() - 10 * HOUR))


def _recent(path: Path) -> bool:
    return time.time() - path.stat().st_mtime < HOUR


def test_every_reader_marks_what_it_used(tmp_path: Path):
    data = cache_path(tmp_path, "fp")
    arrays = {"train_x": torch.zeros(2, 1, 4, 4, dtype=torch.uint8), "train_y": torch.zeros(2, dtype=torch.int64)}
    write_cache(data, {**arrays, "test_x": arrays["train_x"].clone(), "test_y": arrays["train_y"].clone()}, ["a", "b"])
    _age(data)
    assert read_cache(data) is not None and _recent(data)

    images, ids = torch.zeros(3, 3, 8, 8, dtype=torch.uint8), torch.arange(3)
    cell = dict(name="fog", severity=1, seed=0, batch_size=8, device=torch.device("cpu"), cache_dir=tmp_path,
                fingerprint="fp")
    first = generated_cell(images, ids, **cell)
    (cell_file,) = (tmp_path / "corruptions").iterdir()
    _age(cell_file)
    assert torch.equal(generated_cell(images, ids, **cell), first) and _recent(cell_file)

    model = build_model("resnet8", 2, 1, 8)
    card = ModelCard(arch="resnet8", num_classes=2, in_channels=1, image_size=8, classes=["a", "b"], mean=(0.5,),
                     std=(0.5,))
    store_teacher(tmp_path, "k", model, card, {"best_val_acc": 0.5})
    store_teacher_evaluation(tmp_path, "e", {"clean_acc": 0.5})
    stored = [*(tmp_path / "teachers").iterdir(), *(tmp_path / "teacher_evaluations").iterdir()]
    _age(*stored)
    assert load_cached_teacher(tmp_path, "k", build_model("resnet8", 2, 1, 8)) == {"best_val_acc": 0.5}
    assert load_teacher_evaluation(tmp_path, "e") == {"clean_acc": 0.5}
    assert all(_recent(path) for path in stored)


def test_the_module_is_torch_free():
    # The worker's parent process (its sweeper) imports it; torch stays out of that process.
    code = "import sys, kdcore.cache_limit; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"
