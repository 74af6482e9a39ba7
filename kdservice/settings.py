"""Service settings: KD_ environment variables (pydantic-settings), and the folders derived from them.

The `kd` client reads its own two variables (KD_API_URL, KD_API_KEY); kdcore reads KD_CACHE_DIR and
KD_TORCH_THREADS (kdcore/settings.py) when it runs outside the service.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# uvicorn's idle keep-alive: longer than a load balancer's usual 60 s, so the server never closes a
# connection the balancer (or a busy client) is about to reuse.
API_KEEP_ALIVE_SECONDS = 75


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KD_", extra="ignore")

    artifact_dir: Path = Field(
        Path("var"),
        description="root of the service's files: jobs/<id>/, datasets/<id>/, models/<id>.safetensors, "
        "cache/, broker/ and the default SQLite database",
    )
    database_url: str = Field("", description="SQLAlchemy URL; default sqlite:///<artifact_dir>/kd.db")
    broker_url: str = Field("filesystem://", description="Celery broker; filesystem:// needs no server")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    lease_seconds: float = Field(60.0, gt=0, description="a worker's unrenewed claim lasts this long")
    max_attempts: int = Field(3, ge=1, description="deliveries of a job before it fails too_many_attempts")
    resend_after_seconds: float = Field(
        300.0, gt=0, description="a job queued this long, with fewer messages in the broker queue than queued "
        "jobs, is sent again (its message was lost)",
    )
    upload_max_bytes: int = Field(1 << 30, ge=1, description="largest accepted dataset/model upload")
    upload_max_files: int = Field(200_000, ge=1, description="most entries a dataset archive may hold (hidden "
                                  "ones too)")
    upload_max_ratio: float = Field(100.0, gt=0, description="most an archive may expand, as declared sizes over "
                                    "the archive's size (zip bombs)")
    upload_disk_budget_bytes: int = Field(
        10 << 30, ge=1, description="bytes all uploads of one API process may hold at once in tmp/ and in "
        "extraction; an upload that would exceed it is refused (503, or 413 if it could never fit)",
    )
    max_image_pixels: int = Field(4096 * 4096, ge=1, description="largest image (width x height) an upload may "
                                  "hold")
    request_max_bytes: int = Field(1 << 20, ge=1, description="largest request body of every non-upload route")
    max_job_memory_bytes: int = Field(64 << 30, ge=1, description="largest estimated memory of a job at submit "
                                      "(kdservice/estimate.py)")
    max_job_train_flops: float = Field(1e19, gt=0, description="largest estimated training compute of a job at "
                                       "submit, in FLOPs (kdservice/estimate.py)")
    data_dir: Path | None = Field(None, description="where built-in sources (cifar10, ...) and the official "
                                  "CIFAR-10-C/100-C arrays are read; default <artifact_dir>/data")
    events_poll_seconds: float = Field(0.5, gt=0, description="how often /events re-reads the database")
    events_heartbeat_seconds: float = Field(15.0, gt=0, description="SSE comment sent when nothing changed")
    api_workers: int = Field(2, ge=1, description="uvicorn worker processes `make up` starts for the API")
    db_pool_size: int = Field(
        10, ge=1, description="database connections (and concurrent database calls) per API process",
    )
    db_wait_seconds: float = Field(
        10.0, gt=0, description="longest a request waits for a database connection; then 503 + Retry-After",
    )
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        "warning", description="log level of make up, the API and the workers (migrations, Celery's banner)",
    )
    worker_stale_seconds: float = Field(
        60.0, gt=0, description="/readyz fails when no worker has sent a heartbeat for this long",
    )
    cache_max_bytes: int = Field(
        20 << 30, ge=0, description="the shared cache (decoded data, corrupted test sets, teachers) is kept under "
        "this size: each worker's sweeper removes the least recently used entries (none used in the last hour)",
    )
    tmp_max_age_seconds: float = Field(
        3600.0, gt=0, description="leftover upload/extraction files under tmp/ untouched this long are removed",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        # Absolute, so the API and workers started from other folders agree on every path.
        self.artifact_dir = self.artifact_dir.expanduser().resolve()
        self.data_dir = (self.data_dir or self.artifact_dir / "data").expanduser().resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.artifact_dir / 'kd.db'}"
        return self

    # Every folder under artifact_dir is named here and nowhere else.
    def job_dir(self, job_id: str) -> Path:
        return self.artifact_dir / "jobs" / job_id

    @property
    def jobs_dir(self) -> Path:
        return self.artifact_dir / "jobs"

    @property
    def datasets_dir(self) -> Path:
        return self.artifact_dir / "datasets"

    @property
    def models_dir(self) -> Path:
        return self.artifact_dir / "models"

    @property
    def cache_dir(self) -> Path:
        """kdcore's cache shared by every job: decoded data sets, corrupted test sets, trained teachers."""
        return self.artifact_dir / "cache"

    @property
    def tmp_dir(self) -> Path:
        """Uploads being received and archives being extracted."""
        return self.artifact_dir / "tmp"

    @property
    def broker_dir(self) -> Path:
        """The filesystem broker's folders."""
        return self.artifact_dir / "broker"


@lru_cache
def get_settings() -> Settings:
    return Settings()
