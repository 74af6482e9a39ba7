"""Leftovers under `Settings.tmp_dir`: uploads being received and archives being extracted.

A crash (or a SIGKILL) mid-upload leaves them behind. The API removes old ones when it starts and each
worker's sweeper does so as it runs. "Old" is by the newest modification time anywhere inside an entry,
older than KD_TMP_MAX_AGE_SECONDS: an upload in progress writes every chunk and an extraction every
member, so neither looks old; several API processes may share the folder, so none removes another's
work in progress on start.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

log = logging.getLogger("kd.tmpfiles")


def _newest_mtime(entry: Path) -> float:
    newest = entry.lstat().st_mtime
    if entry.is_dir() and not entry.is_symlink():
        for root, dirs, files in os.walk(entry):
            for name in dirs + files:
                try:
                    newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
                except FileNotFoundError:  # removed while we looked
                    pass
    return newest


def remove_stale(tmp_dir: Path, max_age_seconds: float, now: float | None = None) -> list[str]:
    """Remove every entry of tmp_dir untouched for max_age_seconds; returns the names removed."""
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(tmp_dir.iterdir())
    except FileNotFoundError:
        return removed
    for entry in entries:
        try:
            if now - _newest_mtime(entry) < max_age_seconds:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:  # another process cleaned it first
            continue
        except OSError:
            log.warning("could not remove the leftover %s", entry.name, exc_info=True)
            continue
        removed.append(entry.name)
    if removed:
        log.warning("removed %d leftover temporary file(s) older than %.0f s from tmp/", len(removed),
                    max_age_seconds)
    return removed
