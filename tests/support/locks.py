"""Locks a test holds in a transaction of its own, so that the service's statements really wait."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg


@asynccontextmanager
async def tables_locked(pool: asyncpg.Pool, *tables: str) -> AsyncIterator[asyncpg.Connection]:
    """ACCESS EXCLUSIVE on `tables` until the block ends: every statement on them waits."""
    async with pool.acquire() as connection:
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE")
        try:
            yield connection
        finally:
            if not connection.is_closed():  # a test may have terminated it on purpose
                await transaction.rollback()


@asynccontextmanager
async def row_locked(pool: asyncpg.Pool, table: str, row_id: int) -> AsyncIterator[None]:
    """The row FOR UPDATE until the block ends: e.g. the author row a new post's FK check reads."""
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute(f"SELECT 1 FROM {table} WHERE id = $1 FOR UPDATE", row_id)
        yield
