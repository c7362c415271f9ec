"""Engines and session factories: one pool for writes (the primary), one for reads.

Reads (NO_SIDE_EFFECTS calls) use a pool whose connections PostgreSQL itself keeps read-only
(`default_transaction_read_only`), in autocommit: a read costs one round trip, with no
BEGIN/COMMIT around it, and a write attempted from a read still fails. With
DATABASE_REPLICA_URL set that pool points at the replica. Writes use ordinary transactions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import uuid4

from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from service.repositories.base import DIRECT
from service.settings import Settings


@dataclass(frozen=True, slots=True)
class Database:
    """The process's engines and the session factories the session interceptor uses."""

    writer: AsyncEngine
    reader: AsyncEngine
    write_sessions: async_sessionmaker[AsyncSession]
    read_sessions: async_sessionmaker[AsyncSession]

    @property
    def engines(self) -> tuple[AsyncEngine, ...]:
        return (self.writer,) if self.reader is self.writer else (self.writer, self.reader)

    async def ping(self) -> None:
        """One `SELECT 1` on each pool: raises when either cannot be reached."""
        for engine in self.engines:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        for engine in self.engines:
            await engine.dispose()


def _connect_args(settings: Settings, *, read_only: bool) -> dict[str, Any]:
    server_settings = {"application_name": "blog-service"}
    if read_only and not settings.db_pgbouncer:
        # PgBouncer refuses startup parameters it does not track ("unsupported startup
        # parameter: default_transaction_read_only"): through it, reads BEGIN READ ONLY instead.
        server_settings["default_transaction_read_only"] = "on"
    args: dict[str, Any] = {"server_settings": server_settings, "timeout": settings.db_pool_timeout}
    if settings.db_pgbouncer:
        # PgBouncer in transaction mode may hand each transaction a different server
        # connection: named prepared statements must not outlive their transaction.
        args["statement_cache_size"] = 0
        args["prepared_statement_cache_size"] = 0
        args["prepared_statement_name_func"] = lambda: f"__asyncpg_{uuid4()}__"
    return args


def _engine(settings: Settings, url: str, *, read_only: bool) -> AsyncEngine:
    # Autocommit makes a read a single statement round trip. Through PgBouncer the
    # prepare and execute of one statement must share a server connection, which only
    # a transaction guarantees, so reads run in (read-only) transactions there.
    autocommit = read_only and not settings.db_pgbouncer
    options: dict[str, Any] = {}
    if read_only and settings.db_pgbouncer:
        options["postgresql_readonly"] = True  # BEGIN READ ONLY: PostgreSQL still refuses writes
    return create_async_engine(
        url,
        echo=settings.db_echo,
        hide_parameters=True,  # DB_ECHO and error messages must never show a password hash
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        pool_pre_ping=False,  # a dead connection fails its call UNAVAILABLE and the pool refills
        pool_reset_on_return="rollback",
        isolation_level="AUTOCOMMIT" if autocommit else "READ COMMITTED",
        connect_args=_connect_args(settings, read_only=read_only),
        execution_options=options,
    )


def create_database(settings: Settings) -> Database:
    writer = _engine(settings, settings.database_url, read_only=False)
    reader = _engine(
        settings, settings.database_replica_url or settings.database_url, read_only=True
    )
    options: dict[str, Any] = {"expire_on_commit": False, "autoflush": False}
    # Autocommit read connections need no transaction bookkeeping: repositories may send
    # their precompiled SQL straight to the driver (service.repositories.base).
    direct = {DIRECT: not settings.db_pgbouncer}
    return Database(
        writer=writer,
        reader=reader,
        write_sessions=async_sessionmaker(writer, **options),
        read_sessions=async_sessionmaker(reader, info=direct, **options),
    )
