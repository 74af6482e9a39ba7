"""kdcore.atomic: a file is replaced whole or not at all."""

from __future__ import annotations

import stat

import pytest

from kdcore.atomic import atomic_path, write_text_atomic


def test_the_target_appears_whole_and_readable(tmp_path):
    target = tmp_path / "sub" / "results.json"
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # shared by the API and the workers
    assert [p.name for p in target.parent.iterdir()] == ["results.json"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file_and_no_leftover(tmp_path):
    target = tmp_path / "weights.bin"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("the writer died")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.bin"]
