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
  otherwise. A call that fails before touching the database costs no round trip. A statement
  the use case declares complete on its own (`run_alone`, e.g. the one UPDATE of an UpdatePost)
  runs without BEGIN and COMMIT when that is safe (below): one round trip instead of three.
* read pool, direct to PostgreSQL: no transaction at all. Its connections are autocommit and
  PostgreSQL keeps them read-only (`default_transaction_read_only`): one round trip per read.
* read pool through PgBouncer: BEGIN READ ONLY ... COMMIT, since PgBouncer refuses that startup
  parameter and may move an unprepared statement between server connections outside one.
* a snapshot (StreamPosts): BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY, because a cursor
  lives in a transaction and the whole stream should read one consistent state.

A statement run alone is its own transaction: once PostgreSQL has it, cancelling the call no
longer undoes it, and a write answered with an error must not have committed (SPEC). So a
statement runs alone only when it is bound to be over, committed or not, well before the call's
deadline: the write pool's connections limit every statement to ALONE_STATEMENT_SECONDS
(`statement_timeout`, set when they connect; a transaction lifts it with SET LOCAL, its
statements being bounded by the call's deadline instead), and a call runs one alone only with
ALONE_TIME_LEFT_SECONDS or more to go. A statement alone that PostgreSQL cut at that limit
(waiting on a lock, most likely) committed nothing and runs again in a transaction. Through
PgBouncer, which refuses the startup parameter, nothing runs alone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractContextManager, suppress
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import asyncpg
from sqlalchemy.util import greenlet_spawn

from service.db import errors as db_errors
from service.db.spans import NOTHING, StatementSpans

if TYPE_CHECKING:
    from sqlalchemy.pool import Pool, PoolProxiedConnection

BEGIN_WRITE = "BEGIN ISOLATION LEVEL READ COMMITTED"
# On a pool whose statements are bounded for running alone: the transaction's are not.
BEGIN_WRITE_UNBOUNDED = f"{BEGIN_WRITE}; SET LOCAL statement_timeout = 0"
BEGIN_READ_ONLY = "BEGIN READ ONLY"
BEGIN_SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

# How long the end of a call may take to bring its connection back to a known state (the
# driver's cancel request answered, a ROLLBACK) before the connection is dropped instead.
CLEANUP_SECONDS = 2.0

# A statement alone is over within ALONE_STATEMENT_SECONDS (the write pool's statement_timeout)
# and runs alone only with ALONE_TIME_LEFT_SECONDS or more before the call's deadline: the rest
# is the margin for its answer to reach the client, however busy the event loop. Statements
# take milliseconds; one that waits longer (on a lock) runs again in a transaction.
ALONE_STATEMENT_SECONDS = 0.5
ALONE_TIME_LEFT_SECONDS = 2.0

_current: ContextVar[CallSession] = ContextVar("blog_db_session")


class CallSession:
    """One call's use of one pool: at most one connection, and at most one transaction on it."""

    __slots__ = (
        "_alone",
        "_begin",
        "_bounded",
        "_deadline",
        "_driver",
        "_lease",
        "_pool",
        "_spans",
        "in_transaction",
    )

    def __init__(
        self,
        pool: Pool,
        begin: str | None,
        spans: StatementSpans | None = None,
        *,
        bounded: bool = False,
        deadline: float | None = None,
    ) -> None:
        self._pool = pool
        self._begin = begin  # None: autocommit, each statement on its own
        self._spans = spans  # None: tracing is off
        self._bounded = bounded  # the pool's statements end within ALONE_STATEMENT_SECONDS
        self._deadline = deadline  # the call's, in time.monotonic(); None: none runs alone
        self._alone = False  # the next statement is complete on its own (`run_alone`)
        self._lease: PoolProxiedConnection | None = None
        self._driver: asyncpg.Connection | None = None
        self.in_transaction = False

    def _statement(self, sql: str) -> AbstractContextManager[Any]:
        return NOTHING if self._spans is None else self._spans(sql)

    def run_alone(self) -> None:
        """Declares the call's next statement complete on its own: nothing before it must
        commit with it, nothing after it must roll back with it (service.domain.ports.CommitsAlone).
        It then runs without BEGIN and COMMIT if it safely can (the module's docstring)."""
        self._alone = True

    def _runs_alone(self) -> bool:
        """Whether the statement about to run goes alone; the declaration covers it only."""
        if not self._alone:
            return False
        self._alone = False
        return (
            self._bounded
            and not self.in_transaction
            and self._deadline is not None
            and self._deadline - time.monotonic() >= ALONE_TIME_LEFT_SECONDS
        )

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[asyncpg.Record]:
        """The rows of one statement, run on the call's connection."""
        rows: list[asyncpg.Record]
        if self._runs_alone():
            driver = await self.connection(begin=False)
            try:
                with self._statement(sql):
                    rows = await driver.fetch(sql, *args)
                return rows
            except asyncpg.exceptions.QueryCanceledError:
                pass  # cut at ALONE_STATEMENT_SECONDS, so nothing committed: run it in a transaction
        driver = await self.connection()
        with self._statement(sql):
            rows = await driver.fetch(sql, *args)
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

    async def connection(self, *, snapshot: bool = False, begin: bool = True) -> asyncpg.Connection:
        """The call's connection, checked out on first use, in the call's transaction (begun
        now if none is open and the pool has transactions; `begin=False`: none is begun).

        `snapshot` asks for a repeatable-read, read-only transaction; it must be the call's
        first use of the database, since a transaction's isolation is fixed when it begins.
        """
        driver = self._driver
        if driver is None:
            driver = await self._checkout()
        elif snapshot:
            raise RuntimeError("a snapshot must be the call's first use of the database")
        statement = BEGIN_SNAPSHOT if snapshot else self._begin
        if begin and statement is not None and not self.in_transaction:
            self.in_transaction = True  # before the await: a BEGIN cut short must be cleaned up
            await self._execute(driver, statement)
        return driver

    async def _checkout(self) -> asyncpg.Connection:
        # Inside a greenlet: checking out may mean (re)connecting, which is I/O.
        lease = await greenlet_spawn(self._pool.connect)
        driver = lease.driver_connection
        assert driver is not None  # a checked-out connection always has its driver connection
        if driver.is_closed():
            # The server closed it while it sat in the pool (a restart, a terminated backend):
            # a free pre-ping. Every connection opened before it is recycled on checkout, so
            # the second lease is a fresh connection.
            await greenlet_spawn(self._pool._invalidate, lease, None)
            lease = await greenlet_spawn(self._pool.connect)
            driver = lease.driver_connection
            assert driver is not None
        self._lease, self._driver = lease, driver
        return driver

    async def commit(self) -> None:
        if self.in_transaction:
            assert self._driver is not None
            await self._execute(self._driver, "COMMIT")
            self.in_transaction = False

    async def release(self) -> None:
        """Commits what is open and gives the connection back now; the next statement leases a
        new one. For a call about to do slow work that needs no database (a password hash):
        it must not hold a pooled connection, let alone a transaction, while it waits."""
        await self.commit()
        await self.end(None)

    def _release_without_io(self, error: BaseException | None) -> bool:
        """Gives the connection back when that needs no I/O; False when `_close` must run.

        A healthy connection with no transaction open goes back to a pool with room for it as
        plain bookkeeping, synchronously: no greenlet, no task. Most calls end this way.
        """
        lease, driver = self._lease, self._driver
        if lease is None or driver is None:
            return True  # the call never touched the database (e.g. it failed validation)
        if self.in_transaction or driver.is_closed() or driver._protocol._is_cancelling():
            return False
        if error is not None and db_errors.is_disconnect(error):
            return False
        if self._pool.checkedin() >= self._pool.size():  # type: ignore[attr-defined]
            return False  # an overflow connection: the pool will close it, which is I/O
        self._lease = self._driver = None
        lease.close()
        return True

    async def end(self, error: BaseException | None) -> None:
        """Gives the connection back at the end of a call (`error`: what ended it, if anything).

        Without I/O when it can (`_release_without_io`); otherwise the clean-up and the return
        run as one shielded step, which a cancellation arriving now can neither interrupt nor
        leave with the connection stranded, checked out.
        """
        if not self._release_without_io(error):
            await asyncio.shield(self._close(error))

    async def _close(self, error: BaseException | None) -> None:
        """Brings the connection back to a known state and returns it, or drops it.

        A connection whose state can be known goes back to the pool: after a cancellation the
        driver's cancel request is awaited (asyncpg's own pool does the same) and what is still
        open is rolled back, both within CLEANUP_SECONDS, so a statement that outlived its call
        is over by the time the connection is reused. Only a connection in an unknown state is
        closed. When the connection itself was lost, every connection of the pool opened before
        is recycled at its next checkout (SQLAlchemy's own rule on a disconnect): after a
        database restart, no later call trips over a connection left over from before.
        """
        lease, driver = self._lease, self._driver
        self._lease = self._driver = None
        if lease is None or driver is None:
            return
        lost = error is not None and db_errors.is_disconnect(error)
        settled = False
        if not lost:
            try:
                async with asyncio.timeout(CLEANUP_SECONDS):
                    protocol = driver._protocol
                    if protocol._is_cancelling():
                        await protocol._wait_for_cancellation()
                    if self.in_transaction or driver.is_in_transaction():
                        await self._execute(driver, "ROLLBACK")
                settled = not driver.is_closed()
            except Exception as cleanup_error:
                lost = db_errors.is_disconnect(cleanup_error)
        self.in_transaction = False
        if lost:
            await greenlet_spawn(self._pool._invalidate, lease, error)
        elif not settled:
            await greenlet_spawn(lease.invalidate)
        else:
            await greenlet_spawn(lease.close)


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
