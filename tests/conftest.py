"""Shared fixtures: real data, small and fast."""

from __future__ import annotations

import os
from pathlib import Path

# Before torch is imported: tests start several processes at once (API, workers, pytest) on 2 cores, and
# OpenMP's spinning threads then slow small convolutions down ~10x (measured). One thread each is fastest.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One decoded-data cache for the whole test session, as a user's ~/.cache/kd would be."""
    return tmp_path_factory.mktemp("kdcache")
