"""The database side of one call: a pooled connection, leased on first use, and its transaction.

The session interceptor opens one `CallSession` per call and binds it here; repositories reach
it through `current_session()` and run their precompiled SQL (repositories.base.Query) with
`fetch` and `cursor`, on its asyncpg connection. Every statement the session runs goes through
`_statement`, which gives it a span when the call is traced (service.db.spans).

SQLAlchemy owns the pools (sizes, overflow, timeouts, invalidation, the pool metrics) but not
the call: its ORM session would add a unit of work, per-statement bookkeeping and greenlet hops
that cost more CPU than the statements themselves (docs/benchmarks.md), for statements that
need none of it. The transaction a call gets depends on its pool:

* write pool: BEGIN before the call's first statement, COMMIT when the call succeeds, ROLLBACK
  otherwise. A call that fails before touching the database costs no round trip.
* read pool, direct to PostgreSQL: no transaction at all. Its connections are autocommit and
  PostgreSQL keeps them read-only (`default_transaction_read_only`): one round trip per read.
* read pool through PgBouncer: BEGIN READ ONLY ... COMMIT, since PgBouncer refuses that startup
  parameter and may move an unprepared statement between server connections outside one.
* a snapshot (StreamPosts): BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY, because a cursor
  lives in a transaction and the whole stream should read one consistent state.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractContextManager, suppress
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from sqlalchemy.util import greenlet_spawn

from service.db.spans import NOTHING, StatementSpans

if TYPE_CHECKING:
    import asyncpg
    from sqlalchemy.pool import Pool, PoolProxiedConnection

BEGIN_WRITE = "BEGIN ISOLATION LEVEL READ COMMITTED"
BEGIN_READ_ONLY = "BEGIN READ ONLY"
BEGIN_SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

_current: ContextVar[CallSession] = ContextVar("blog_db_session")


class CallSession:
    """One call's use of one pool: at most one connection, and at most one transaction on it."""

    __slots__ = ("_begin", "_driver", "_lease", "_pool", "_spans", "in_transaction")

    def __init__(self, pool: Pool, begin: str | None, spans: StatementSpans | None = None) -> None:
        self._pool = pool
        self._begin = begin  # None: autocommit, each statement on its own
        self._spans = spans  # None: tracing is off
        self._lease: PoolProxiedConnection | None = None
        self._driver: asyncpg.Connection | None = None
        self.in_transaction = False

    def _statement(self, sql: str) -> AbstractContextManager[Any]:
        return NOTHING if self._spans is None else self._spans(sql)

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[asyncpg.Record]:
        """The rows of one statement, run on the call's connection."""
        driver = await self.connection()
        with self._statement(sql):
            rows: list[asyncpg.Record] = await driver.fetch(sql, *args)
        return rows

    async def cursor(
        self, sql: str, args: Sequence[Any], prefetch: int
    ) -> AsyncIterator[asyncpg.Record]:
        """The rows of one statement from a server-side cursor in a snapshot (`connection`)."""
        driver = await self.connection(snapshot=True)
        with self._statement(sql):
            async for row in driver.cursor(sql, *args, prefetch=prefetch):
                yield row

    async def _execute(self, driver: asyncpg.Connection, sql: str) -> None:
        with self._statement(sql):
            await driver.execute(sql)

    async def connection(self, *, snapshot: bool = False) -> asyncpg.Connection:
        """The call's connection, checked out (and its transaction begun) on first use.

        `snapshot` asks for a repeatable-read, read-only transaction; it must be the call's
        first use of the database, since a transaction's isolation is fixed when it begins.
        """
        driver = self._driver
        if driver is not None:
            if snapshot:
                raise RuntimeError("a snapshot must be the call's first use of the database")
            return driver
        # Inside a greenlet: checking out may mean (re)connecting, which is I/O.
        lease = self._lease = await greenlet_spawn(self._pool.connect)
        driver = self._driver = lease.driver_connection
        assert driver is not None  # a checked-out connection always has its driver connection
        begin = BEGIN_SNAPSHOT if snapshot else self._begin
        if begin is not None:
            self.in_transaction = True  # before the await: a BEGIN cut short must be cleaned up
            await self._execute(driver, begin)
        return driver

    async def commit(self) -> None:
        if self.in_transaction:
            assert self._driver is not None
            await self._execute(self._driver, "COMMIT")
            self.in_transaction = False

    def _release_without_io(self, *, discard: bool) -> bool:
        """Gives the connection back when that needs no I/O; False when `_close` must run.

        A healthy connection with no transaction open goes back to a pool with room for it as
        plain bookkeeping, synchronously: no greenlet, no task. Most calls end this way.
        """
        lease, driver = self._lease, self._driver
        if lease is None or driver is None:
            return True  # the call never touched the database (e.g. it failed validation)
        if discard or self.in_transaction or driver.is_closed():
            return False
        if self._pool.checkedin() >= self._pool.size():  # type: ignore[attr-defined]
            return False  # an overflow connection: the pool will close it, which is I/O
        self._lease = self._driver = None
        lease.close()
        return True

    async def end(self, *, discard: bool) -> None:
        """Gives the connection back at the end of a call, rolling back what is still open.

        Without I/O when it can (`_release_without_io`); otherwise the rollback and the return
        run as one shielded step, which a cancellation arriving now can neither interrupt nor
        leave with the connection stranded, checked out.
        """
        if not self._release_without_io(discard=discard):
            await asyncio.shield(self._close(discard=discard))

    async def _close(self, *, discard: bool) -> None:
        """Rolls back what is still open and gives the connection back (or drops it).

        `discard` drops the connection instead of pooling it: after a cancelled statement or a
        lost connection its state is not worth trusting, and PostgreSQL rolls back whatever
        a closed connection left open. A rollback that fails drops the connection too.
        """
        lease, driver = self._lease, self._driver
        self._lease = self._driver = None
        if lease is None or driver is None:
            return
        if self.in_transaction and not discard and not driver.is_closed():
            with suppress(Exception):
                await self._execute(driver, "ROLLBACK")
                self.in_transaction = False
        if discard or self.in_transaction or driver.is_closed():
            await greenlet_spawn(lease.invalidate)
        else:
            await greenlet_spawn(lease.close)
        self.in_transaction = False


def current_session() -> CallSession:
    """The session of the call being served. Only code running inside a call may use it."""
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError("no database session: called outside a gRPC call") from None


def bind_session(session: CallSession) -> object:
    return _current.set(session)


def unbind_session(token: object) -> None:
    # A stream cancelled while suspended at `yield` is closed later by asyncio's generator
    # finalizer, in another context, where the token cannot be reset; nothing needs undoing
    # there: every call runs in a task (and a context) of its own.
    with suppress(ValueError):
        _current.reset(token)  # type: ignore[arg-type]
