"""Library settings (KD_ environment variables). The service's settings live in api/config.py."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class LibrarySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KD_", extra="ignore")

    cache_dir: Path = Path("~/.cache/kd")  # decoded data sets and generated corruptions
    # CPU threads for torch in kdcore.run; None keeps torch's default (one per core). Set cores / N when N
    # training processes share a machine: oversubscribed OpenMP threads spin and slow everything down.
    torch_threads: int | None = None


@lru_cache
def library_settings() -> LibrarySettings:
    return LibrarySettings()


def default_cache_dir() -> Path:
    return library_settings().cache_dir.expanduser()
