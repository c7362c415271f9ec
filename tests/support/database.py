"""Reaching PostgreSQL the way an operator does: plain URLs and statements of our own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.engine import make_url

T = TypeVar("T")


def plain(url: str) -> str:
    """An asyncpg/psql URL from a SQLAlchemy one."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Runs a coroutine to completion from sync code, even while a test's loop is running."""
    with ThreadPoolExecutor(1) as executor:
        return executor.submit(asyncio.run, coroutine).result()


async def execute(url: str, sql: str) -> None:
    """Runs `sql` on a connection of its own to `url` (a SQLAlchemy URL), e.g. CREATE DATABASE."""
    connection = await asyncpg.connect(plain(url))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@contextmanager
def new_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A brand-new, empty database on `admin_url`'s server (its SQLAlchemy URL), dropped after."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    run_sync(execute(admin_url, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        run_sync(execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
