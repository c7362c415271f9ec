"""Fixtures: a real PostgreSQL, a throwaway database per run, a real server on a real port.

TEST_DATABASE_URL (postgresql+asyncpg://... of a server we may create databases on) is used
when set; otherwise an embedded PostgreSQL is started for the run and stopped after it.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import grpc
import pytest
from blog.v1 import post_service_pb2_grpc, user_service_pb2_grpc
from grpc import aio
from sqlalchemy.engine import make_url

from service.db import migrate
from service.db.embedded import EmbeddedPostgres
from service.server import Server
from service.settings import Settings
from tests.support import FAST_ARGON2

T = TypeVar("T")


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Runs a coroutine to completion from sync code, even while a test's loop is running."""
    with ThreadPoolExecutor(1) as executor:
        return executor.submit(asyncio.run, coroutine).result()


def plain(url: str) -> str:
    """An asyncpg/psql URL from a SQLAlchemy one."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def admin_url() -> Iterator[str]:
    """A superuser URL (SQLAlchemy form) on the server the run uses."""
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    with tempfile.TemporaryDirectory(prefix="blog-test-pg-") as data:
        server = EmbeddedPostgres(Path(data), fast=True)
        server.start()
        try:
            yield server.url()
        finally:
            server.stop("immediate")


@pytest.fixture(scope="session")
def database_url(admin_url: str) -> Iterator[str]:
    """A database of our own for this run, migrated to head, dropped at the end."""

    name = f"blog_test_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(plain(admin_url))
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    run_sync(admin(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    try:
        yield url
    finally:
        run_sync(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def make_settings(database_url: str, **overrides: object) -> Settings:
    env: dict[str, object] = {
        "DATABASE_URL": database_url,
        "GRPC_PORT": 0,
        **{k: int(v) for k, v in FAST_ARGON2.items()},
    }
    env.update(overrides)
    return Settings(_env_file=None, **env)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
async def server(database_url: str) -> AsyncIterator[Server]:
    """The service, in this process, on a real port."""
    instance = Server(make_settings(database_url))
    await instance.start()
    yield instance
    await instance.stop()


@pytest.fixture(scope="session")
async def channel(server: Server) -> AsyncIterator[aio.Channel]:
    async with aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


@pytest.fixture
def users(channel: aio.Channel) -> user_service_pb2_grpc.UserServiceStub:
    return user_service_pb2_grpc.UserServiceStub(channel)


@pytest.fixture
def posts(channel: aio.Channel) -> post_service_pb2_grpc.PostServiceStub:
    return post_service_pb2_grpc.PostServiceStub(channel)


@pytest.fixture(scope="session")
async def db_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A connection of the test's own, to look at rows the way an operator would."""
    pool = await asyncpg.create_pool(plain(database_url), min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
async def db(db_pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with db_pool.acquire() as connection:
        yield connection


@pytest.fixture(autouse=True)
async def empty_tables(request: pytest.FixtureRequest) -> None:
    """Every test that uses the service or the database starts from empty tables."""
    if "db_pool" not in request.fixturenames and "server" not in request.fixturenames:
        return
    database_url: str = request.getfixturevalue("database_url")
    connection = await asyncpg.connect(plain(database_url))
    try:
        await connection.execute("TRUNCATE users, posts, post_requests RESTART IDENTITY CASCADE")
    finally:
        await connection.close()


def unique(prefix: str = "u") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


__all__ = ["grpc", "make_settings", "plain", "unique"]
