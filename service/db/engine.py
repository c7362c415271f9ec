"""Engines and call sessions: one pool for writes (the primary), one for reads.

Reads (NO_SIDE_EFFECTS calls) use a pool whose connections PostgreSQL itself keeps read-only
(`default_transaction_read_only`), in autocommit: a read costs one round trip, with no
BEGIN/COMMIT around it, and a write attempted from a read still fails. With
DATABASE_REPLICA_URL set that pool points at the replica. Writes use ordinary transactions, and
a write of one statement may run alone: for that the write pool's connections bound every
statement to ALONE_STATEMENT_SECONDS, which a transaction lifts (BEGIN_WRITE_UNBOUNDED). How a
call uses a pool is service.db.session's business.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import Tracer
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.util import greenlet_spawn

from service.db.errors import is_disconnect
from service.db.pool import FairAsyncQueuePool
from service.db.session import (
    ALONE_STATEMENT_SECONDS,
    BEGIN_READ_ONLY,
    BEGIN_WRITE,
    BEGIN_WRITE_UNBOUNDED,
    CallSession,
)
from service.db.spans import StatementSpans
from service.settings import Settings

sql_log = logging.getLogger("service.sql")


@dataclass(frozen=True, slots=True)
class Probe:
    """A one-connection pool of its own beside a call pool, so that health reports the
    database, not the pool: a pool busy with calls (or streams) cannot make the probe wait."""

    engine: AsyncEngine
    calls: AsyncEngine  # the call pool on the same server
    begin: str | None

    async def ping(self) -> None:
        """`SELECT 1` the way a call runs it. A lost connection means the server went away:
        every call connection opened before is recycled at its next checkout, and the probe
        tries once more on a fresh connection, so a quick restart is healed, not reported."""
        for attempt in (1, 2):
            session = CallSession(self.engine.sync_engine.pool, self.begin)
            ended_by: BaseException | None = None
            try:
                await session.fetch("SELECT 1")
                await session.commit()
                return
            except Exception as error:
                ended_by = error
                if attempt == 2 or not is_disconnect(error):
                    raise
                await greenlet_spawn(self.calls.sync_engine.pool._invalidate, None, None, False)
            finally:
                await session.end(ended_by)


@dataclass(frozen=True, slots=True)
class Database:
    """The process's engines, and a session on either for each call."""

    writer: AsyncEngine
    reader: AsyncEngine
    read_begin: str | None  # how a read call's transaction begins; None: it has none
    write_begin: str  # how a write call's transaction begins
    alone: bool  # the write pool's statements are bounded: one may run alone (db.session)
    probes: tuple[Probe, ...]
    write_spans: StatementSpans | None = None  # None: tracing is off
    read_spans: StatementSpans | None = None

    def session(self, *, read_only: bool, deadline: float | None = None) -> CallSession:
        """A call's session; `deadline` (time.monotonic()) lets a write run a statement alone."""
        if read_only:
            return CallSession(self.reader.sync_engine.pool, self.read_begin, self.read_spans)
        return CallSession(
            self.writer.sync_engine.pool,
            self.write_begin,
            self.write_spans,
            bounded=self.alone,
            deadline=deadline,
        )

    @property
    def engines(self) -> tuple[AsyncEngine, ...]:
        """The call pools."""
        return (self.writer,) if self.reader is self.writer else (self.writer, self.reader)

    async def ping(self) -> None:
        """Raises unless the primary and the read server both answer."""
        for probe in self.probes:
            await probe.ping()

    async def dispose(self) -> None:
        for engine in (*self.engines, *(probe.engine for probe in self.probes)):
            await engine.dispose()


# What pg_stat_activity calls the service's sessions. The health probe's are told apart: an
# operator (or a test) counting the sessions that serve calls, or looking for one idle in a
# transaction, is not misled by the probe's SELECT 1 once a second.
APPLICATION_NAME = "blog-service"
PROBE_APPLICATION_NAME = "blog-service-probe"


def _connect_args(settings: Settings, *, read_only: bool, probe: bool) -> dict[str, Any]:
    server_settings = {"application_name": PROBE_APPLICATION_NAME if probe else APPLICATION_NAME}
    if read_only and not settings.db_pgbouncer:
        # PgBouncer refuses startup parameters it does not track ("unsupported startup
        # parameter: default_transaction_read_only"): through it, reads BEGIN READ ONLY instead.
        server_settings["default_transaction_read_only"] = "on"
    if not read_only and not settings.db_pgbouncer:
        # So that a statement run alone is over, committed or not, long before its call's
        # deadline (service.db.session); transactions lift it.
        server_settings["statement_timeout"] = str(round(ALONE_STATEMENT_SECONDS * 1000))
    args: dict[str, Any] = {"server_settings": server_settings, "timeout": settings.db_pool_timeout}
    if settings.db_pgbouncer:
        # PgBouncer in transaction mode may hand each transaction a different server
        # connection: named prepared statements must not outlive their transaction.
        args["statement_cache_size"] = 0
    return args


def _echo_statements(dbapi_connection: Any, record: Any) -> None:
    dbapi_connection.driver_connection.add_query_logger(_log_statement)


def _log_statement(query: Any) -> None:
    # The SQL only: parameters may hold a password hash (SPEC: no hash in any log).
    failed = f" failed: {type(query.exception).__name__}" if query.exception else ""
    sql_log.info("%s [%.2f ms]%s", query.query, query.elapsed * 1000, failed)


def _engine(settings: Settings, url: str, *, read_only: bool, probe: bool = False) -> AsyncEngine:
    """A call pool, or with `probe` the health probe's pool of one connection."""
    # Only its pool is used: calls (and the health probe) run their SQL on the driver
    # connection and manage their own transactions (service.db.session).
    engine = create_async_engine(
        url,
        pool_size=1 if probe else settings.db_pool_size,
        max_overflow=0 if probe else settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        # Last in, first out: the connections in use stay few and warm (statements prepared,
        # caches hot); the rest sit idle instead of each being touched in turn.
        pool_use_lifo=True,
        poolclass=FairAsyncQueuePool,  # and waiters served in the order they came
        pool_pre_ping=False,  # a lost connection recycles the pool (service.db.session)
        # Every call ends its own transaction or drops its connection (service.db.session);
        # SQLAlchemy's rollback-on-return could not even see a transaction begun on the
        # driver connection, so it would only cost time on every return.
        pool_reset_on_return=None,
        connect_args=_connect_args(settings, read_only=read_only, probe=probe),
    )
    if settings.db_echo and not probe:
        event.listen(engine.sync_engine.pool, "connect", _echo_statements)
    return engine


def create_database(settings: Settings, tracer: Tracer | None = None) -> Database:
    """The engines; with a `tracer`, the statements of traced calls get spans (never the
    health probe's: its pools have none)."""
    read_url = settings.database_replica_url or settings.database_url
    writer = _engine(settings, settings.database_url, read_only=False)
    reader = _engine(settings, read_url, read_only=True)
    # Direct to PostgreSQL, read connections are autocommit and read-only by the server's
    # own setting; through PgBouncer, which refuses that setting, reads BEGIN READ ONLY.
    read_begin = BEGIN_READ_ONLY if settings.db_pgbouncer else None
    # Through PgBouncer, which refuses the statement_timeout startup parameter, writes always
    # run in a transaction.
    write_begin = BEGIN_WRITE if settings.db_pgbouncer else BEGIN_WRITE_UNBOUNDED
    probes = (
        Probe(
            _engine(settings, settings.database_url, read_only=False, probe=True),
            writer,
            write_begin,
        ),
        Probe(_engine(settings, read_url, read_only=True, probe=True), reader, read_begin),
    )
    return Database(
        writer=writer,
        reader=reader,
        read_begin=read_begin,
        write_begin=write_begin,
        alone=not settings.db_pgbouncer,
        probes=probes,
        write_spans=None if tracer is None else StatementSpans(tracer, writer.url),
        read_spans=None if tracer is None else StatementSpans(tracer, reader.url),
    )
