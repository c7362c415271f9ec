"""Waiting for what settles after a call ends: pooled connections, PostgreSQL sessions, locks.

Nothing here sleeps a fixed time: each polls what a test would otherwise guess, and returns the
last value it saw when `within` seconds pass, for the test to assert on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from service.db.engine import APPLICATION_NAME
from service.server import Server

T = TypeVar("T")

APP = APPLICATION_NAME  # what every call connection of the service is named (not the probe's)


async def settle(measure: Callable[[], Awaitable[T]], within: float, every: float = 0.02) -> T:
    """`await measure()`, polled until it is falsy (0, empty) or `within` s pass: its last value."""
    end = time.monotonic() + within
    while True:
        result = await measure()
        if not result or time.monotonic() > end:
            return result
        await asyncio.sleep(every)


async def until(condition: Callable[[], bool], within: float) -> bool:
    """Whether `condition()` became true within `within` seconds (checked every 20 ms)."""
    end = time.monotonic() + within
    while not condition():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(0.02)
    return True


def checked_out(server: Server) -> int:
    """Connections checked out of the server's pools (writer and reader) right now."""
    return int(sum(engine.pool.checkedout() for engine in server.database.engines))  # type: ignore[attr-defined]


async def settled_checked_out(server: Server, within: float = 2.0) -> int:
    """Connections still checked out of the server's pools once they settle."""

    async def measure() -> int:
        return checked_out(server)

    return await settle(measure, within)


async def busy_backends(db: asyncpg.Connection) -> list[str]:
    """Sessions of the service still running, waiting or in a transaction: state, wait, query."""
    rows = await db.fetch(
        "SELECT state, wait_event_type, query FROM pg_stat_activity"
        " WHERE application_name = $1 AND datname = current_database()"
        " AND pid <> pg_backend_pid() AND state IS DISTINCT FROM 'idle'",
        APP,
    )
    return [f"{r['state']}/{r['wait_event_type']}: {r['query']}" for r in rows]


async def settled_busy_backends(db: asyncpg.Connection, within: float = 1.0) -> list[str]:
    """busy_backends once they settle: what is still there after `within` s was left behind."""
    return await settle(lambda: busy_backends(db), within)


async def sessions_by_state(db: asyncpg.Connection) -> dict[str, int]:
    """The service's PostgreSQL sessions on this database, counted by state ('?' for none)."""
    rows = await db.fetch(
        "SELECT coalesce(state, '?') AS state, count(*) AS n FROM pg_stat_activity"
        " WHERE application_name = $1 AND datname = current_database()"
        " AND pid <> pg_backend_pid() GROUP BY 1",
        APP,
    )
    return {r["state"]: int(r["n"]) for r in rows}


async def waiting_on_lock(db: asyncpg.Connection, at_least: int, within: float = 5.0) -> int:
    """How many of the service's statements wait on a lock, once `at_least` do (or time is up)."""
    waiting = 0

    async def too_few() -> bool:
        nonlocal waiting
        waiting = int(
            await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
                " AND datname = current_database() AND wait_event_type = 'Lock'",
                APP,
            )
        )
        return waiting < at_least

    await settle(too_few, within)
    return waiting
