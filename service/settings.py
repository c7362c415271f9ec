"""The service's configuration: one pydantic-settings class read from the environment and `.env`."""

from __future__ import annotations

import sys
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob an operator can turn. Names are SPEC's environment variables."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    database_url: str = Field(alias="DATABASE_URL")
    database_replica_url: str | None = Field(default=None, alias="DATABASE_REPLICA_URL")
    db_pgbouncer: bool = Field(default=False, alias="DB_PGBOUNCER")
    db_echo: bool = Field(default=False, alias="DB_ECHO")
    # A fixed pool by default: SQLAlchemy closes an overflow connection as soon as it is returned
    # to a full pool, so sustained load past the pool size opens and closes connections (and
    # re-prepares every statement on them) over and over.
    db_pool_size: int = Field(default=20, ge=1, le=1000, alias="DB_POOL_SIZE")
    db_max_overflow: int = Field(default=0, ge=0, le=1000, alias="DB_MAX_OVERFLOW")
    db_pool_timeout: float = Field(default=5.0, gt=0, le=3600, alias="DB_POOL_TIMEOUT")

    grpc_host: str = Field(default="127.0.0.1", min_length=1, alias="GRPC_HOST")
    grpc_port: int = Field(default=50051, ge=0, le=65535, alias="GRPC_PORT")
    grpc_workers: int = Field(default=1, ge=1, le=256, alias="GRPC_WORKERS")
    grpc_max_message_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, alias="GRPC_MAX_MESSAGE_BYTES"
    )

    auth_tokens: str = Field(default="", alias="AUTH_TOKENS")
    tls_cert_file: Path | None = Field(default=None, alias="TLS_CERT_FILE")
    tls_key_file: Path | None = Field(default=None, alias="TLS_KEY_FILE")
    tls_client_ca_file: Path | None = Field(default=None, alias="TLS_CLIENT_CA_FILE")

    metrics_port: int | None = Field(default=None, ge=0, le=65535, alias="METRICS_PORT")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", alias="LOG_LEVEL"
    )
    log_format: Literal["text", "json"] = Field(default="text", alias="LOG_FORMAT")
    shutdown_grace_seconds: float = Field(
        default=10.0, ge=0, le=3600, alias="SHUTDOWN_GRACE_SECONDS"
    )
    default_timeout_seconds: float = Field(
        default=30.0, gt=0, le=86400, alias="DEFAULT_TIMEOUT_SECONDS"
    )

    # Page tokens are MACed with this key so every process and replica sharing the
    # configuration accepts the others' tokens. Set it in production; the default
    # only suits a single deployment that never rotates it.
    page_token_secret: str = Field(
        default="blog-v1-dev-page-token-secret", min_length=16, alias="PAGE_TOKEN_SECRET"
    )

    # Argon2id cost (OWASP minimum by default: 19 MiB, 2 passes, 1 lane).
    argon2_memory_kib: int = Field(default=19 * 1024, ge=8, alias="ARGON2_MEMORY_KIB")
    argon2_time_cost: int = Field(default=2, ge=1, alias="ARGON2_TIME_COST")
    argon2_parallelism: int = Field(default=1, ge=1, alias="ARGON2_PARALLELISM")
    password_hash_threads: int = Field(default=2, ge=1, le=64, alias="PASSWORD_HASH_THREADS")

    # OpenTelemetry's own variables (SPEC, Observability). The SDK reads these, and the rest of
    # its OTEL_* variables, from the environment itself (service.tracing); they are declared here
    # so that a bad value stops start-up like any other and a value from `.env` reaches the SDK.
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, min_length=1, alias="OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    otel_exporter_otlp_protocol: Literal["grpc", "http/protobuf"] = Field(
        default="grpc", alias="OTEL_EXPORTER_OTLP_PROTOCOL"
    )
    otel_service_name: str = Field(default="blog-service", min_length=1, alias="OTEL_SERVICE_NAME")
    otel_traces_sampler: Literal[
        "always_on",
        "always_off",
        "traceidratio",
        "parentbased_always_on",
        "parentbased_always_off",
        "parentbased_traceidratio",
    ] = Field(default="parentbased_always_on", alias="OTEL_TRACES_SAMPLER")
    otel_traces_sampler_arg: float | None = Field(
        default=None, ge=0, le=1, alias="OTEL_TRACES_SAMPLER_ARG"
    )
    otel_sdk_disabled: bool = Field(default=False, alias="OTEL_SDK_DISABLED")

    @field_validator("database_url", "database_replica_url")
    @classmethod
    def _async_driver(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("postgresql+asyncpg://"):
            raise ValueError("must be a postgresql+asyncpg:// URL")
        return value

    @field_validator("otel_exporter_otlp_endpoint", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", "otel_traces_sampler", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("tls_cert_file", "tls_key_file", "tls_client_ca_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @model_validator(mode="after")
    def _tls_pairs(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("TLS_CERT_FILE and TLS_KEY_FILE must be set together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("TLS_CLIENT_CA_FILE needs TLS_CERT_FILE and TLS_KEY_FILE")
        return self

    @property
    def tracing(self) -> bool:
        """Whether to trace: an OTLP endpoint is set and the SDK is not disabled."""
        return self.otel_exporter_otlp_endpoint is not None and not self.otel_sdk_disabled

    def otel_environment(self) -> dict[str, str]:
        """The OTEL_* values above as the SDK reads them from the environment."""
        values = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.otel_exporter_otlp_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": self.otel_exporter_otlp_protocol,
            "OTEL_SERVICE_NAME": self.otel_service_name,
            "OTEL_TRACES_SAMPLER": self.otel_traces_sampler,
            "OTEL_TRACES_SAMPLER_ARG": self.otel_traces_sampler_arg,
        }
        return {name: str(value) for name, value in values.items() if value is not None}

    @cached_property
    def tokens(self) -> tuple[bytes, ...]:
        """The accepted bearer tokens; empty means authentication is off."""
        return tuple(t.strip().encode() for t in self.auth_tokens.split(",") if t.strip())


def load_settings() -> Settings:
    """Reads the settings, or stops the process with one line naming the bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]) or "settings"
            problems.append(f"{name}: {error['msg']}")
        sys.stderr.write("configuration error: " + "; ".join(problems) + "\n")
        raise SystemExit(2) from None
