"""One settings object for every process, read from IDMIRROR_* environment variables.

A setting that is missing or wrong is an InvalidSettings whose message is one line naming the
environment variable, which the command line prints as it is.
"""

import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

PREFIX = "IDMIRROR_"


class InvalidSettings(ValueError):
    """A setting is missing or wrong; the message names its environment variable."""


class SourceSettings(BaseModel):
    """One upstream source a scheduled backfill pulls from (an entry of IDMIRROR_SOURCES)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(pattern=r"^https?://")
    token_env: str | None = None  # the environment variable holding the bearer token
    page_size: int = Field(500, ge=1, le=10000)
    schedule: float | str | None = None  # seconds between runs, or a five-field crontab
    mode: Literal["upsert", "mirror"] = "upsert"
    prune: bool = False
    timeout_seconds: float = Field(10.0, gt=0)
    max_attempts: int = Field(6, ge=1)

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: float | str | None) -> float | str | None:
        if isinstance(value, str):
            if len(value.split()) == 5:
                return value
            try:
                value = float(value)
            except ValueError:
                raise ValueError("schedule is seconds or a five-field crontab") from None
        if value is not None and value <= 0:
            raise ValueError("schedule must be more than 0 seconds")
        return value


class Settings(BaseSettings):
    """Configuration; see the table in README.md."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore")

    database_url: str | None = None
    redis_url: str | None = None
    internal_token: str | None = None
    home: Path = Path(".idmirror")
    host: str = "127.0.0.1"
    port: int = 8000
    flower_host: str = "127.0.0.1"
    flower_port: int = 5555
    api_workers: int = Field(1, ge=1)  # uvicorn processes of `idmirror api`

    sync_wait_seconds: float = Field(10.0, ge=0)
    max_wait_seconds: float = Field(60.0, ge=0)
    allow_private_webhooks: bool = False
    max_operations: int = Field(1000, ge=1)
    max_nodes: int = Field(10000, ge=1)
    max_clock_skew_seconds: float = Field(300.0, ge=0)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    max_params_schema_bytes: int = Field(64 * 1024, ge=1024)
    max_graph_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    body_timeout_seconds: float = Field(10.0, gt=0)
    accept_timeout_seconds: float = Field(10.0, gt=0)
    accept_statement_timeout_seconds: float = Field(3.0, gt=0)
    max_queued_writes: int = Field(1000, ge=1)
    accept_writers: int = Field(2, ge=1, le=16)  # per `idmirror api`, split among its processes
    apply_on_accept: bool = True
    statement_timeout_seconds: float = Field(60.0, gt=0)
    lock_timeout_seconds: float = Field(10.0, gt=0)

    drain_batch_size: int = Field(500, ge=1)
    drain_time_limit_seconds: float = Field(300.0, gt=0)
    max_job_starts: int = Field(3, ge=1)
    count_starts_after_seconds: float = Field(1.0, ge=0)
    sweep_interval_seconds: float = Field(5.0, gt=0)
    sweep_after_seconds: float = Field(5.0, ge=0)
    idempotency_ttl_hours: float = Field(24.0, gt=0)
    job_retention_hours: float = Field(168.0, gt=0)
    queued_flag_seconds: int = Field(30, ge=1)
    stall_after_seconds: float = Field(60.0, gt=0)
    worker_heartbeat_seconds: float = Field(5.0, gt=0)
    worker_concurrency: int | None = None

    backfill_chunk_size: int = Field(1000, ge=1, le=20000)
    backfill_chunk_bytes: int = Field(4 * 1024 * 1024, ge=64 * 1024)
    backfill_buffer_bytes: int = Field(32 * 1024 * 1024, ge=1024 * 1024)
    backfill_buckets: int = Field(8, ge=1, le=256)
    backfill_lock_budget: int = Field(4096, ge=1)
    backfill_max_line_bytes: int = Field(1024 * 1024, ge=1024)
    backfill_receive_timeout_seconds: float = Field(600.0, gt=0)
    prune_max_fraction: float = Field(0.1, ge=0, le=1)
    sources: dict[str, SourceSettings] = Field(default_factory=dict)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    rate_limit_per_second: float = Field(100.0, gt=0)
    rate_limit_burst: int = Field(200, ge=1)
    rate_limit_backfill_bytes: int = Field(1024 * 1024, ge=1024)
    token_cache_seconds: float = Field(1.0, ge=0)
    audit_retention_days: float = Field(90.0, gt=0)
    metrics_public: bool = False
    flower_basic_auth: str | None = Field(None, pattern=r"^([^:]+:.+)?$")  # empty: unset

    @model_validator(mode="after")
    def _accepts_fit_their_bound(self) -> "Settings":
        if self.accept_statement_timeout_seconds >= self.accept_timeout_seconds:
            raise ValueError(
                "IDMIRROR_ACCEPT_STATEMENT_TIMEOUT_SECONDS must be less than "
                "IDMIRROR_ACCEPT_TIMEOUT_SECONDS, which bounds the statement and the wait for "
                "a connection together"
            )
        return self

    @model_validator(mode="after")
    def _jobs_outlive_their_idempotency_keys(self) -> "Settings":
        # An Idempotency-Key answers from its job: the job must be kept as long as the key. A
        # retention left at its default grows with a longer TTL; one that is set must be long
        # enough.
        if self.job_retention_hours >= self.idempotency_ttl_hours:
            return self
        if "job_retention_hours" in self.model_fields_set:
            raise ValueError(
                "IDMIRROR_JOB_RETENTION_HOURS must be at least IDMIRROR_IDEMPOTENCY_TTL_HOURS"
            )
        self.job_retention_hours = self.idempotency_ttl_hours
        return self

    def writers_per_process(self) -> int:
        """The batches one API process records at once: IDMIRROR_ACCEPT_WRITERS shared among
        the `idmirror api` processes (IDMIRROR_API_WORKERS), one at least each, so that a
        second process on the same cores makes no smaller batches, and no more commits, than
        one."""
        return max(1, self.accept_writers // self.api_workers)

    def require_database_url(self) -> str:
        if not self.database_url:
            raise InvalidSettings(
                "IDMIRROR_DATABASE_URL is not set; run `idmirror up` for the embedded services"
            )
        return self.database_url

    def require_redis_url(self) -> str:
        if not self.redis_url:
            raise InvalidSettings(
                "IDMIRROR_REDIS_URL is not set; run `idmirror up` for the embedded services"
            )
        return self.redis_url


def _variable(loc: Sequence[int | str]) -> str:
    """`IDMIRROR_SOURCES (crm.base_url)` for a field's location in the model."""
    if not loc:
        return ""
    inside = ".".join(str(part) for part in loc[1:])
    return f"{PREFIX}{str(loc[0]).upper()}" + (f" ({inside})" if inside else "")


def _one_line(error: ValidationError | SettingsError) -> str:
    if isinstance(error, SettingsError):  # a complex value (IDMIRROR_SOURCES) that is not JSON
        field = re.search(r'field "(\w+)"', str(error))
        name = _variable([field.group(1)]) if field else "a setting"
        return f"{name}: not valid JSON ({error.__cause__ or error})"
    problems = []
    for problem in error.errors():
        message = problem["msg"].removeprefix("Value error, ")
        name = _variable(problem["loc"])
        problems.append(f"{name}: {message}" if name else message)
    return "; ".join(problems)


def read_settings() -> Settings:
    """The settings the environment gives; InvalidSettings if one is wrong."""
    try:
        return Settings()
    except (ValidationError, SettingsError) as exc:
        raise InvalidSettings(_one_line(exc)) from None


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return read_settings()
