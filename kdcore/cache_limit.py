"""Keep a cache folder under a size: the entries used longest ago are removed first. No torch import.

Everything kdcore caches can be rebuilt (a decoded data set, a corrupted test set, a trained teacher and
its evaluation), and every reader treats a missing or unreadable file as absent and rebuilds it, so
removing an entry costs time, never a wrong number. Readers mark what they use (`mark_used` sets the
file's mtime: atime is often switched off), writers set it by writing, and `prune_cache` removes the
entries with the oldest mtime until the folder fits. A teacher's weights and its summary are one entry.
Entries used within `keep_recent_s` stay even over the limit: a running job may be about to read them.
Temporary files of interrupted atomic writes (kdcore.atomic) older than a day go too.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

# What kdcore writes under its cache folder (kdcore.data.cache, kdcore.robustness.evaluate, kdcore.teacher_cache).
CACHE_FOLDERS = ("data", "corruptions", "teachers", "teacher_evaluations")
STALE_TEMP_SECONDS = 24 * 3600


def mark_used(*paths: Path) -> None:
    """Record that paths were just used (their mtime), so that prune_cache keeps them longest."""
    for path in paths:
        try:
            os.utime(path)
        except OSError:  # gone meanwhile, or a read-only cache: nothing to keep
            pass


@dataclass
class _Entry:
    files: list[Path] = field(default_factory=list)
    size: int = 0
    last_used: float = 0.0


@dataclass(frozen=True)
class Pruned:
    removed: list[Path]
    freed_bytes: int
    kept_bytes: int  # what the cache holds afterwards (over the limit only when all of it is recent)


def _entries(cache_dir: Path, now: float) -> tuple[dict[tuple[str, str], _Entry], list[Path]]:
    entries: dict[tuple[str, str], _Entry] = {}
    stale_temps = []
    for folder in CACHE_FOLDERS:
        root = Path(cache_dir) / folder
        if not root.is_dir():
            continue
        for path in root.iterdir():
            try:
                info = path.stat()
            except OSError:  # removed meanwhile (another worker's prune)
                continue
            if not path.is_file():
                continue
            if path.name.startswith("."):  # an atomic write's temp file
                if now - info.st_mtime > STALE_TEMP_SECONDS:
                    stale_temps.append(path)
                continue
            entry = entries.setdefault((folder, path.name.split(".")[0]), _Entry())
            entry.files.append(path)
            entry.size += info.st_size
            entry.last_used = max(entry.last_used, info.st_mtime)
    return entries, stale_temps


def prune_cache(cache_dir: Path, max_bytes: int, keep_recent_s: float = 3600.0,
                now: float | None = None) -> Pruned:
    """Remove the least recently used entries of cache_dir until it holds at most max_bytes."""
    now = time.time() if now is None else now
    entries, removed = _entries(cache_dir, now)
    for path in removed:
        path.unlink(missing_ok=True)
    total = sum(entry.size for entry in entries.values())
    freed = 0
    for entry in sorted(entries.values(), key=lambda e: e.last_used):
        if total <= max_bytes or now - entry.last_used < keep_recent_s:
            break
        for path in entry.files:
            path.unlink(missing_ok=True)
        removed.extend(entry.files)
        total -= entry.size
        freed += entry.size
    return Pruned(removed, freed, total)
