"""Library settings (KD_ environment variables). The service's settings live in api/config.py."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class LibrarySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KD_", extra="ignore")

    cache_dir: Path = Path("~/.cache/kd")  # decoded data sets and generated corruptions


@lru_cache
def library_settings() -> LibrarySettings:
    return LibrarySettings()


def default_cache_dir() -> Path:
    return library_settings().cache_dir.expanduser()
