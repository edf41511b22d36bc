"""Server settings, read from the environment (``A2A_*``, ``DATABASE_URL``).

Every setting is declared once in ``SETTINGS``: its environment variable, default and help text. The
command line (``codetether-server --help``) and docs/server.md are written from that table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

StorageKind = Literal["memory", "redis", "postgres"]


@dataclass(frozen=True)
class SettingSpec:
    field: str
    env: str
    default: str
    help: str


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("host", "A2A_HOST", "0.0.0.0", "Address to listen on."),
    SettingSpec("port", "A2A_PORT", "8000", "TCP port to listen on."),
    SettingSpec(
        "storage",
        "A2A_STORAGE",
        "",
        "memory, redis or postgres. Empty: postgres when DATABASE_URL is set, else redis when "
        "A2A_REDIS_URL is set, else memory.",
    ),
    SettingSpec("database_url", "DATABASE_URL", "", "PostgreSQL URL (durable storage, several replicas)."),
    SettingSpec(
        "redis_url",
        "A2A_REDIS_URL",
        "",
        "Redis URL: storage when A2A_STORAGE=redis (or auto), and task events whenever it is set.",
    ),
    SettingSpec(
        "redis_prefix", "A2A_REDIS_PREFIX", "codetether", "Prefix of every Redis key and event channel."
    ),
    SettingSpec(
        "auth_tokens",
        "A2A_AUTH_TOKENS",
        "",
        "Comma-separated bearer tokens. Empty: no authentication.",
    ),
    SettingSpec(
        "lease_seconds", "A2A_LEASE_SECONDS", "60", "A claim's lease; heartbeats renew it (seconds)."
    ),
    SettingSpec(
        "max_attempts",
        "A2A_MAX_ATTEMPTS",
        "3",
        "Lease expiries after which a task fails (default for tasks that do not set max_attempts).",
    ),
    SettingSpec(
        "lease_sweep_interval",
        "A2A_LEASE_SWEEP_INTERVAL",
        "5",
        "Seconds between scans for expired leases (every replica scans; scans are safe concurrently).",
    ),
    SettingSpec(
        "task_retention_seconds",
        "A2A_TASK_RETENTION_SECONDS",
        "604800",
        "Finished tasks (completed, failed, cancelled) and their output are deleted this long after "
        "they finished (checked with the lease sweep). 0: keep them forever.",
    ),
    SettingSpec(
        "worker_offline_seconds",
        "A2A_WORKER_OFFLINE_SECONDS",
        "90",
        'A worker without a heartbeat for this long is shown as "offline".',
    ),
    SettingSpec(
        "max_body_bytes",
        "A2A_MAX_BODY_BYTES",
        str(8 * 1024 * 1024),
        "Largest request body accepted; larger ones get 413.",
    ),
    SettingSpec(
        "max_output_chars",
        "A2A_MAX_OUTPUT_CHARS",
        "1000000",
        "Output kept per task; older output is dropped and the output marked truncated.",
    ),
    SettingSpec(
        "db_pool_size", "A2A_DB_POOL_SIZE", "10", "PostgreSQL connections per server process (maximum)."
    ),
    SettingSpec("log_level", "A2A_LOG_LEVEL", "info", "debug, info, warning or error."),
)


class SettingsError(ValueError):
    """A setting has a bad value; the message names the environment variable."""


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=0, le=65535)
    storage: StorageKind = "memory"
    database_url: str = ""
    redis_url: str = ""
    redis_prefix: str = Field(default="codetether", min_length=1, pattern=r"^[A-Za-z0-9._:-]+$")
    auth_tokens: tuple[str, ...] = ()
    lease_seconds: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=3, ge=1, le=100)
    lease_sweep_interval: float = Field(default=5.0, gt=0)
    task_retention_seconds: float = Field(default=604800.0, ge=0)
    worker_offline_seconds: float = Field(default=90.0, gt=0)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_output_chars: int = Field(default=1_000_000, ge=100)
    db_pool_size: int = Field(default=10, ge=1, le=500)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("auth_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(token.strip() for token in value.split(",") if token.strip())
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @classmethod
    def from_values(cls, values: Mapping[str, str]) -> Settings:
        """Build settings from raw strings keyed by field name; resolves the automatic storage."""
        raw = {key: value for key, value in values.items() if value is not None}
        if not raw.get("storage"):
            if raw.get("database_url"):
                raw["storage"] = "postgres"
            elif raw.get("redis_url"):
                raw["storage"] = "redis"
            else:
                raw["storage"] = "memory"
        try:
            settings = cls.model_validate(raw)
        except ValidationError as exc:
            env_of = {spec.field: spec.env for spec in SETTINGS}
            problems = []
            for error in exc.errors():
                field = str(error["loc"][0]) if error["loc"] else ""
                problems.append(f"{env_of.get(field, field)}: {error['msg']}")
            raise SettingsError("; ".join(problems)) from None
        if settings.storage == "postgres" and not settings.database_url:
            raise SettingsError("DATABASE_URL: required when A2A_STORAGE=postgres")
        if settings.storage == "redis" and not settings.redis_url:
            raise SettingsError("A2A_REDIS_URL: required when A2A_STORAGE=redis")
        return settings

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls.from_values({spec.field: env.get(spec.env, spec.default) for spec in SETTINGS})
