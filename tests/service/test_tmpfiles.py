"""kdservice.tmpfiles on real files: only entries untouched for the age threshold are removed."""

from __future__ import annotations

import os
import time

from kdservice.tmpfiles import remove_stale


def _age(path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def test_remove_stale_keeps_anything_written_recently(tmp_path):
    old_file, new_file = tmp_path / "upload-old", tmp_path / "upload-new"
    old_file.write_bytes(b"a")
    new_file.write_bytes(b"b")
    old_dir, busy_dir = tmp_path / "extract-old", tmp_path / "extract-busy"
    (old_dir / "a").mkdir(parents=True)
    (old_dir / "a" / "1.png").write_bytes(b"c")
    (busy_dir / "a").mkdir(parents=True)
    (busy_dir / "a" / "2.png").write_bytes(b"d")  # written now: the extraction is still running
    for path in (old_file, old_dir / "a" / "1.png", old_dir / "a", old_dir, busy_dir / "a", busy_dir):
        _age(path, 120)
    link = tmp_path / "link-old"
    link.symlink_to(tmp_path / "elsewhere")
    _age(link, 120)

    assert sorted(remove_stale(tmp_path, max_age_seconds=60)) == ["extract-old", "link-old", "upload-old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["extract-busy", "upload-new"]
    assert remove_stale(tmp_path / "missing", 60) == []
