"""Shared fixtures: real data, small and fast."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CIFAR_TARBALL = REPO.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"

# Two cores: more intra-op threads than cores only adds contention in tests.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One decoded-data cache for the whole test session, as a user's ~/.cache/kd would be."""
    return tmp_path_factory.mktemp("kdcache")
