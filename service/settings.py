"""The service's configuration: one pydantic-settings class read from the environment and `.env`."""

from __future__ import annotations

import ssl
import sys
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# What MACs page tokens when PAGE_TOKEN_SECRET is unset: public (it is in this file), so anyone can
# forge tokens for a server that uses it; start-up warns (service.__main__).
DEV_PAGE_TOKEN_SECRET = "blog-v1-dev-page-token-secret"


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
    # A connection gets GOAWAY after this long (gRPC adds +-10 % jitter; 0 = never), its calls
    # and streams finish, and the client reconnects: SO_REUSEPORT then places it afresh, so a
    # restarted worker gets its share again and an unlucky split of connections does not last.
    grpc_max_connection_age_seconds: float = Field(
        default=300.0, ge=0, le=30 * 86400, alias="GRPC_MAX_CONNECTION_AGE_SECONDS"
    )
    # Calls in progress at once in one process; more are refused RESOURCE_EXHAUSTED at once.
    max_concurrent_rpcs: int = Field(default=2000, ge=1, le=1_000_000, alias="MAX_CONCURRENT_RPCS")
    # HTTP/2 streams one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
    grpc_max_streams_per_connection: int = Field(
        default=1000, ge=1, le=1000, alias="GRPC_MAX_STREAMS_PER_CONNECTION"
    )
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
    # After SIGTERM the server goes on serving (health already NOT_SERVING) for this long, so
    # that balancers watching health stop routing to it first: set it above their interval.
    shutdown_drain_seconds: float = Field(
        default=0.0, ge=0, le=3600, alias="SHUTDOWN_DRAIN_SECONDS"
    )
    default_timeout_seconds: float = Field(
        default=30.0, gt=0, le=86400, alias="DEFAULT_TIMEOUT_SECONDS"
    )
    # A stream whose client takes no message for this long is ended, its snapshot released.
    stream_idle_timeout_seconds: float = Field(
        default=30.0, gt=0, le=86400, alias="STREAM_IDLE_TIMEOUT_SECONDS"
    )
    # Streams at once per process; 0 = half the read pool, so unary reads keep the other half.
    max_streams: int = Field(default=0, ge=0, le=100_000, alias="MAX_STREAMS")

    # Page tokens are MACed with this key so every process and replica sharing the
    # configuration accepts the others' tokens. Set it in production; the default
    # only suits a single deployment that never rotates it.
    page_token_secret: str = Field(
        default=DEV_PAGE_TOKEN_SECRET, min_length=16, alias="PAGE_TOKEN_SECRET"
    )

    # Argon2id cost (OWASP minimum by default: 19 MiB, 2 passes, 1 lane).
    argon2_memory_kib: int = Field(default=19 * 1024, ge=8, alias="ARGON2_MEMORY_KIB")
    argon2_time_cost: int = Field(default=2, ge=1, alias="ARGON2_TIME_COST")
    argon2_parallelism: int = Field(default=1, ge=1, alias="ARGON2_PARALLELISM")
    password_hash_threads: int = Field(default=2, ge=1, le=64, alias="PASSWORD_HASH_THREADS")
    # Calls that may wait for a hashing thread; more are refused RESOURCE_EXHAUSTED at once.
    # A default-cost hash takes ~25-50 ms per thread, so 16 waiting is at most ~0.4 s of queue.
    password_hash_queue: int = Field(default=16, ge=0, le=100_000, alias="PASSWORD_HASH_QUEUE")

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

    @field_validator("auth_tokens")
    @classmethod
    def _some_token(cls, value: str) -> str:
        # Empty is "auth off"; anything else that names no token is a mistake, not "auth off".
        if value and not value.replace(",", "").strip():
            raise ValueError(
                "holds no token (comma-separated bearer tokens, or empty for auth off)"
            )
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
        if value is not None:
            try:
                value.read_bytes()
            except OSError as error:
                raise ValueError(f"cannot read {value}: {error.strerror}") from None
        return value

    @model_validator(mode="after")
    def _tls_pairs(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("TLS_CERT_FILE and TLS_KEY_FILE must be set together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("TLS_CLIENT_CA_FILE needs TLS_CERT_FILE and TLS_KEY_FILE")
        if self.tls_cert_file is not None and self.tls_key_file is not None:
            # Checked here, because gRPC reports an unusable certificate as a port it cannot bind.
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            try:
                context.load_cert_chain(self.tls_cert_file, self.tls_key_file, password="")
            except (ssl.SSLError, ValueError):
                raise ValueError(
                    f"TLS_CERT_FILE {self.tls_cert_file} and TLS_KEY_FILE {self.tls_key_file}"
                    " are not a PEM certificate chain and its unencrypted private key"
                ) from None
            if self.tls_client_ca_file is not None:
                try:
                    context.load_verify_locations(cafile=self.tls_client_ca_file)
                except ssl.SSLError:
                    raise ValueError(
                        f"TLS_CLIENT_CA_FILE {self.tls_client_ca_file} holds no PEM certificate"
                    ) from None
        return self

    @property
    def stream_capacity(self) -> int:
        return self.max_streams or max(1, (self.db_pool_size + self.db_max_overflow) // 2)

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
