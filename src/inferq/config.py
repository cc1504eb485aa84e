"""One validated Settings object, read from flags and ``INFERQ_*`` variables.

It is built once by the CLI (or a test) and passed explicitly; nothing reads the
environment anywhere else.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from inferq.store import create_store
from inferq.store.base import JobStore


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INFERQ_", extra="forbid")

    #: where the SQLite database and local files live
    data_dir: Path = Path("inferq-data")
    #: ``postgresql://…``, ``sqlite:///PATH`` or ``memory://``; empty: ``<data_dir>/inferq.db``
    database_url: str = ""
    #: connections a process keeps open to PostgreSQL, at least and at most
    db_pool_min: int = Field(default=1, ge=0)
    db_pool_max: int = Field(default=10, ge=1)
    #: TOML file mapping model names to engines; None: the embedded default model
    models_file: Path | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    #: run a worker inside the API process
    worker: bool = True
    #: request bodies above this many bytes get 413
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    #: how long a worker's claim lasts without a heartbeat
    lease_seconds: float = Field(default=30.0, gt=0)
    #: a job is retried this many times after its worker died, then fails
    max_retries: int = Field(default=3, ge=0)
    #: deadline of sync chat requests that name none (seconds)
    sync_timeout: float = Field(default=240.0, gt=0)
    #: how long a looked-up API key is trusted before it is read again (seconds)
    key_cache_seconds: float = Field(default=2.0, ge=0)
    log_level: str = "info"

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    def create_store(self) -> JobStore:
        return create_store(
            self.database_url,
            data_dir=self.data_dir,
            min_connections=self.db_pool_min,
            max_connections=self.db_pool_max,
        )
