"""A busy pool serves its waiters in the order they came (service.db.pool), on a real server.

One connection (DB_POOL_SIZE=1) is held while calls queue for it; a newcomer whose first step
runs right after the connection comes back must not take it from the first in line, a waiter
that gives up (its pool timeout, its call's cancellation) passes its turn on, and no path
loses the connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import exc as sa_exc

from service.db.engine import Database, create_database
from service.db.session import CallSession
from tests.support import make_settings


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    instance = create_database(make_settings(database_url, DB_POOL_SIZE=1, DB_POOL_TIMEOUT=2))
    try:
        yield instance
    finally:
        await instance.dispose()


async def _take(database: Database, name: str, order: list[str]) -> None:
    session = database.session(read_only=False)
    try:
        connection = await session.connection(begin=False)
        order.append(name)
        assert await connection.fetchval("SELECT 1") == 1
    finally:
        await session.end(None)


async def _let_them_queue() -> None:
    """Time for the checkouts just started to wait for the pool's connection: each waits at
    its first step, so a few loop turns are plenty (and nothing here reads the queue's insides)."""
    await asyncio.sleep(0.1)


async def _two_waiting(
    database: Database,
) -> tuple[CallSession, list[str], asyncio.Task[None], asyncio.Task[None]]:
    """The pool's one connection held, and two checkouts queued for it, in that order."""
    holder = database.session(read_only=False)
    await holder.connection(begin=False)
    order: list[str] = []
    first = asyncio.create_task(_take(database, "first", order))
    second = asyncio.create_task(_take(database, "second", order))
    await _let_them_queue()
    return holder, order, first, second


def _idle(database: Database) -> int:
    return database.writer.sync_engine.pool.checkedin()  # type: ignore[attr-defined, no-any-return]


async def test_waiters_are_served_before_a_newcomer(database: Database) -> None:
    holder, order, first, second = await _two_waiting(database)
    # The newcomer's first step is scheduled before the waiters are woken: with SQLAlchemy's
    # own queue it finds the returned connection still in the queue and takes it.
    newcomer = asyncio.create_task(_take(database, "newcomer", order))
    await holder.end(None)  # no I/O: the connection goes back synchronously
    await asyncio.gather(first, second, newcomer)
    assert order == ["first", "second", "newcomer"]
    assert _idle(database) == 1


async def test_a_waiter_that_times_out_leaves_the_line(database: Database) -> None:
    holder = database.session(read_only=False)
    await holder.connection(begin=False)
    order: list[str] = []
    with pytest.raises(sa_exc.TimeoutError):
        await _take(database, "gave up", order)  # DB_POOL_TIMEOUT=2 s
    waiting = asyncio.create_task(_take(database, "next", order))
    await _let_them_queue()
    await holder.end(None)
    await waiting
    assert order == ["next"]
    assert _idle(database) == 1


async def test_a_waiter_cancelled_as_it_is_served_passes_the_connection_on(
    database: Database,
) -> None:
    holder, order, first, second = await _two_waiting(database)
    await holder.end(None)  # handed to `first`, which has not run yet...
    first.cancel()  # ...and never will: its call was cancelled
    await second
    with pytest.raises(asyncio.CancelledError):
        await first
    assert order == ["second"]
    assert _idle(database) == 1


async def test_the_pool_logs_where_sqlalchemy_pools_do(database: Database) -> None:
    # Not under `service.` (INFO by default): "Pool disposed" and "Pool recreating" at every
    # stop, and a line per checkout at LOG_LEVEL=DEBUG, would join the service's own log.
    sqlalchemy_pools = logging.getLogger("sqlalchemy.pool.impl.AsyncAdaptedQueuePool")
    assert database.writer.sync_engine.pool.logger is sqlalchemy_pools
