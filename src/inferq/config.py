"""One validated Settings object, read from flags and ``INFERQ_*`` variables.

It is built once by the CLI (or a test) and passed explicitly; nothing reads the
environment anywhere else.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: what a ``blob_url`` may start with (besides the literal ``postgres``)
BLOB_SCHEMES = ("file:///", "postgresql://", "postgres://", "s3://")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INFERQ_", extra="forbid")

    #: where the SQLite database and local files live
    data_dir: Path = Path("inferq-data")
    #: ``postgresql://…``, ``sqlite:///PATH`` or ``memory://``; empty: ``<data_dir>/inferq.db``
    database_url: str = Field(default="", repr=False)
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
    #: the largest result a node may post (its JSON) and the largest output file it may
    #: upload, in bytes; more get 413
    node_max_output_bytes: int = Field(default=1024 * 1024, gt=0)
    node_max_file_bytes: int = Field(default=100 * 1024 * 1024, gt=0)
    #: a job is retried this many times after its worker died, then fails
    max_retries: int = Field(default=3, ge=0)
    #: deadline of sync chat requests that name none (seconds)
    sync_timeout: float = Field(default=240.0, gt=0)
    #: how long a looked-up API key is trusted before it is read again (seconds)
    key_cache_seconds: float = Field(default=2.0, ge=0)
    #: the largest file upload (OpenAI files, Fireworks datasets), in bytes
    max_file_bytes: int = Field(default=200 * 1024 * 1024, gt=0)
    #: requests one batch may hold
    max_batch_rows: int = Field(default=200_000, gt=0)
    #: batches a tenant may have open (not ended) at once; more get 429
    max_open_batches: int = Field(default=20, gt=0)
    #: tokens of one tenant's unfinished batch rows per model (estimated at validation);
    #: a batch past it fails validation with token_limit_exceeded (unset: no bound)
    max_batch_enqueued_tokens: int | None = Field(default=None, gt=0)
    #: tenants with waiting work share the engines by weight, in tokens processed
    #: (``inferq tenants weight``); off: one global order (class, priority, submission)
    fairness: bool = True
    #: requests and tokens per minute of a key that sets none (``inferq keys limit``);
    #: unset: no limit
    default_rpm: int | None = Field(default=None, gt=0)
    default_tpm: int | None = Field(default=None, gt=0)
    #: queued jobs (not batch rows) one tenant may have: a submit past it gets 429
    max_queued_per_tenant: int | None = Field(default=None, gt=0)
    #: queued jobs (not batch rows) of all tenants together: a submit past it gets 503
    max_queued: int | None = Field(default=None, gt=0)
    #: requests one server process answers at once; more get 503 at once (not the
    #: health checks); unset: no bound
    max_inflight_requests: int | None = Field(default=None, gt=0)
    #: how long a batch may run before it expires, keeping what finished (hours)
    batch_window_hours: float = Field(default=24.0, gt=0)
    #: secret that signs download and upload URLs; empty: one kept in ``<data_dir>/signing.key``
    signing_key: str = Field(default="", repr=False)
    #: how long a signed URL stays valid (seconds)
    signed_url_seconds: float = Field(default=600.0, gt=0)
    #: document workflows (Unstructured jobs): files per job, bytes per file, jobs of
    #: one tenant running at once (the rest stay scheduled)
    workflow_max_files: int = Field(default=10, gt=0)
    workflow_max_file_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    workflow_max_running: int = Field(default=5, gt=0)
    #: a tenant's workflow jobs launched less than this many seconds apart get 429
    #: (Unstructured's documented limit); 0: no spacing
    workflow_launch_spacing: float = Field(default=1.0, ge=0)
    #: the chat model of enrichment nodes and the embedding model of embed nodes
    #: whose settings name none (empty: the first configured model that fits)
    workflow_chat_model: str = ""
    workflow_embed_model: str = ""
    #: seconds a client may take to send a request's headers, and to send each piece of
    #: its body (idle time between chunks, not the whole upload); then 408 or a close
    header_timeout: float = Field(default=10.0, gt=0)
    body_timeout: float = Field(default=60.0, gt=0)
    #: ``serve --workers N``: an API process whose event loop has not run for this many
    #: seconds is killed and started again (the connections the kernel hands its socket
    #: would wait forever)
    stall_timeout: float = Field(default=15.0, gt=0)
    #: the server's URL as clients reach it (``https://inferq.example.com``), for the
    #: signed URLs it hands out; empty: taken from each request's Host header
    public_url: str = ""
    log_level: str = "info"
    #: ``text`` or ``json`` (one object per line, with request and job ids)
    log_format: Literal["text", "json"] = "text"
    #: where blobs (files, datasets, outputs) live: ``file:///PATH``, ``postgresql://…``,
    #: ``postgres`` (the job store's database) or ``s3://BUCKET/PREFIX`` (a bucket; the
    #: ``AWS_*`` variables or the URL's query name its endpoint, region and credentials);
    #: empty: PostgreSQL when the job store is PostgreSQL, else ``<data_dir>/blobs``
    blob_url: str = Field(default="", repr=False)
    #: a Bearer token that may read ``GET /metrics`` (a Prometheus scraper's), besides
    #: admin API keys; empty: admin keys only
    metrics_token: str = Field(default="", repr=False)
    #: ``inferq worker``: serve ``GET /metrics`` on this port (none: no listener)
    worker_metrics_port: int | None = Field(default=None, ge=0, le=65535)
    #: ``inferq worker``: the address of its metrics listener
    worker_metrics_host: str = "127.0.0.1"
    #: webhooks may go to private, loopback and link-local addresses (a trusted network)
    webhook_allow_private: bool = False
    #: how long an event's delivery is retried before it is given up (hours)
    webhook_max_age_hours: float = Field(default=72.0, gt=0)
    #: seconds one delivery attempt may take
    webhook_timeout: float = Field(default=10.0, gt=0)
    #: the longest wait before the first retry of a delivery; each later one doubles
    #: (up to an hour), with jitter
    webhook_retry_seconds: float = Field(default=5.0, gt=0)
    #: days finished jobs, batches, workflow jobs and their outputs are kept (0: forever)
    retention_days: float = Field(default=30.0, ge=0)
    #: how long a login to the web console (``/console``) lasts (hours)
    console_session_hours: float = Field(default=12.0, gt=0)

    @field_validator("blob_url")
    @classmethod
    def _check_blob_url(cls, value: str) -> str:
        value = value.strip()
        if value and value != "postgres" and not value.startswith(BLOB_SCHEMES):
            raise ValueError("blob_url must be file:///PATH, postgresql://…, postgres or s3://…")
        return value

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("public_url must start with http:// or https://")
        if "?" in value or "#" in value:
            raise ValueError("public_url cannot have a query or a fragment")
        return value

    @property
    def blobs_dir(self) -> Path:
        """Where uploaded files, datasets and batch outputs are kept."""
        return self.data_dir / "blobs"

    def signing_secret(self) -> bytes:
        """The URL-signing secret: the setting, or a random one kept in the data dir."""
        if self.signing_key:
            return self.signing_key.encode()
        path = self.data_dir / "signing.key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            # 0600 from the start: never readable by others, even for a moment
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)  # a stale file of this name kept its own mode
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
            # the first process to finish wins; the others read its secret
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
            tmp.unlink()
        return path.read_text().strip().encode()
