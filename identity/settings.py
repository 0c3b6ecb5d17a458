"""One settings object for every process, read from IDMIRROR_* environment variables."""

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Configuration; see the table in README.md."""

    model_config = SettingsConfigDict(env_prefix="IDMIRROR_", extra="ignore")

    database_url: str | None = None
    redis_url: str | None = None
    internal_token: str | None = None
    home: Path = Path(".idmirror")
    host: str = "127.0.0.1"
    port: int = 8000
    flower_port: int = 5555

    sync_wait_seconds: float = Field(10.0, ge=0)
    max_wait_seconds: float = Field(60.0, ge=0)
    allow_private_webhooks: bool = False
    max_operations: int = Field(1000, ge=1)
    max_nodes: int = Field(10000, ge=1)

    drain_batch_size: int = Field(500, ge=1)
    sweep_interval_seconds: float = Field(5.0, gt=0)
    sweep_after_seconds: float = Field(5.0, ge=0)
    idempotency_ttl_hours: float = Field(24.0, gt=0)
    queued_flag_seconds: int = Field(30, ge=1)
    worker_concurrency: int | None = None
    log_level: str = "INFO"

    def require_database_url(self) -> str:
        if not self.database_url:
            raise RuntimeError(
                "IDMIRROR_DATABASE_URL is not set; run `idmirror up` for the embedded services"
            )
        return self.database_url

    def require_redis_url(self) -> str:
        if not self.redis_url:
            raise RuntimeError(
                "IDMIRROR_REDIS_URL is not set; run `idmirror up` for the embedded services"
            )
        return self.redis_url


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
