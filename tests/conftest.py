"""Fixtures: a real PostgreSQL, a throwaway database per run, a real server on a real port.

TEST_DATABASE_URL (postgresql+asyncpg://... of a server we may create databases on) is used
when set; otherwise an embedded PostgreSQL is started for the run and stopped after it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from blog.v1 import post_service_pb2_grpc, user_service_pb2_grpc
from grpc import aio

from devtools.embedded import EmbeddedPostgres
from service.db import migrate
from service.server import Server
from tests.support import new_database, plain, serving
from tests.support.statements import StatementCounter


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
    with new_database(admin_url, "blog_test") as url:
        migrate.upgrade(url)
        yield url


@pytest.fixture(scope="session")
async def server(database_url: str) -> AsyncIterator[Server]:
    """The service, in this process, on a real port."""
    async with serving(database_url) as instance:
        yield instance


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


@pytest.fixture
async def counter(server: Server) -> AsyncIterator[StatementCounter]:
    """Counts the statements the session's server sends while the test runs."""
    instance = StatementCounter(server)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()
