"""One client cannot starve the others: streams that are never read, streams of large rows.

Each test is the attack, run against a real server and a real PostgreSQL, asserting what the
other clients (and an operator looking at PostgreSQL) see.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import psutil
import pytest
from blog.v1 import post_service_pb2, post_service_pb2_grpc, user_service_pb2, user_service_pb2_grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.server import Server
from tests.conftest import make_settings
from tests.support import ServerProcess, rich_error

SERVING = health_pb2.HealthCheckResponse.SERVING


async def _author_with_posts(db: asyncpg.Connection, name: str, count: int, size: int) -> int:
    author: int = await db.fetchval(
        "INSERT INTO users (email, username, hashed_password) VALUES ($1, $2, 'x') RETURNING id",
        f"{name}@example.com",
        name,
    )
    await db.execute(
        "INSERT INTO posts (author_id, title, content)"
        " SELECT $1, 't' || g, repeat('x', $2) FROM generate_series(1, $3) g",
        author,
        size,
        count,
    )
    return author


async def _our_backends(db: asyncpg.Connection, state: str) -> int:
    n: int = await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'blog-service'"
        " AND datname = current_database() AND state = $1",
        state,
    )
    return n


@pytest.fixture
async def small_server(database_url: str, db_pool: asyncpg.Pool) -> AsyncIterator[Server]:
    """A pool of 4 (so 2 streams at most) and a 2-second stream idle timeout."""
    server = Server(
        make_settings(
            database_url, DB_POOL_SIZE=4, STREAM_IDLE_TIMEOUT_SECONDS=2, DB_POOL_TIMEOUT=5
        )
    )
    await server.start()
    yield server
    await server.stop()


async def test_unread_streams_cannot_take_the_read_pool_or_hold_snapshots(
    small_server: Server, db: asyncpg.Connection
) -> None:
    """12 streams, each read once and then never again, on a read pool of 4: past the stream
    capacity (2) they are refused RESOURCE_EXHAUSTED at once; another client's 30 reads all
    succeed in under a second each; health stays SERVING; and once the idle timeout passes, no
    session of ours is left idle in a transaction and no connection is checked out.
    Before: every other read failed UNAVAILABLE after 5 s and health went NOT_SERVING."""
    author = await _author_with_posts(db, "hoarder", 400, 40_000)  # 16 MB: fills any window
    attacker = aio.insecure_channel(f"127.0.0.1:{small_server.port}")
    victim = aio.insecure_channel(f"127.0.0.1:{small_server.port}")
    streams: Any = post_service_pb2_grpc.PostServiceStub(attacker)
    reads: Any = user_service_pb2_grpc.UserServiceStub(victim)
    try:
        calls = [
            streams.StreamPosts(post_service_pb2.StreamPostsRequest(author_id=author))
            for _ in range(12)
        ]
        opened, refused = 0, []
        for call in calls:
            try:
                await call.read()
                opened += 1
            except aio.AioRpcError as error:
                refused.append(rich_error(error))
        assert opened == 2
        assert {(r.code, r.reason) for r in refused} == {
            (grpc.StatusCode.RESOURCE_EXHAUSTED, "STREAMS_EXHAUSTED")
        }
        latencies = []
        for _ in range(30):
            start = time.perf_counter()
            await reads.GetUser(user_service_pb2.GetUserRequest(id=author), timeout=5)
            latencies.append(time.perf_counter() - start)
        assert max(latencies) < 1.0, latencies
        health: Any = health_pb2_grpc.HealthStub(victim)
        answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
        assert answer.status == SERVING
        assert await _our_backends(db, "idle in transaction") >= 1  # the two open snapshots

        await asyncio.sleep(3.0)  # past STREAM_IDLE_TIMEOUT_SECONDS
        assert await _our_backends(db, "idle in transaction") == 0
        assert small_server.streams.active == 0
        assert sum(e.pool.checkedout() for e in small_server.database.engines) == 0  # type: ignore[attr-defined]
        # The capacity is free again for clients that read.
        again = streams.StreamPosts(post_service_pb2.StreamPostsRequest(author_id=author))
        assert (await again.read()).author_id == author
        again.cancel()
        for call in calls:
            call.cancel()
    finally:
        await attacker.close(None)
        await victim.close(None)


def test_streams_of_large_posts_buffer_bytes_not_rows(database_url: str) -> None:
    """5 concurrent streams over 300 posts of 100,000 characters each (30 MB), read slowly: the
    server's memory grows by far less than the data. Before, each stream prefetched 500 rows,
    here all 300 posts: about 30 MB per stream, 150 MB for the five."""

    async def scenario(address: str, pid: int) -> float:
        db = await asyncpg.connect(make_settings(database_url).database_url.replace("+asyncpg", ""))
        try:
            await db.execute("TRUNCATE users, posts RESTART IDENTITY CASCADE")
            author = await _author_with_posts(db, "essayist", 300, 100_000)
        finally:
            await db.close()
        process = psutil.Process(pid)
        before = process.memory_info().rss
        peak = before
        async with aio.insecure_channel(
            address, options=[("grpc.max_receive_message_length", 8 * 1024 * 1024)]
        ) as channel:
            stub: Any = post_service_pb2_grpc.PostServiceStub(channel)

            async def slow_reader() -> int:
                nonlocal peak
                count = 0
                async for post in stub.StreamPosts(
                    post_service_pb2.StreamPostsRequest(author_id=author), timeout=120
                ):
                    assert len(post.content) == 100_000
                    count += 1
                    if count % 20 == 0:
                        peak = max(peak, process.memory_info().rss)
                        await asyncio.sleep(0.05)
                return count

            counts = await asyncio.gather(*(slow_reader() for _ in range(5)))
        assert counts == [300] * 5
        return float(peak - before) / 2**20

    with ServerProcess({"DATABASE_URL": database_url}) as server:
        assert server.process is not None
        grown = asyncio.run(scenario(server.address, server.process.pid))
    assert grown < 60, f"server RSS grew {grown:.0f} MiB while streaming"


async def test_reads_keep_their_speed_next_to_streams_at_capacity(
    small_server: Server, db: asyncpg.Connection
) -> None:
    """Streams at capacity, read steadily: unary reads of another client keep a median far
    below the pool timeout (they have connections of their own)."""
    author = await _author_with_posts(db, "reader", 3000, 200)
    async with aio.insecure_channel(f"127.0.0.1:{small_server.port}") as channel:
        stub: Any = post_service_pb2_grpc.PostServiceStub(channel)
        users: Any = user_service_pb2_grpc.UserServiceStub(channel)

        async def drain() -> int:
            return len(
                [
                    p
                    async for p in stub.StreamPosts(
                        post_service_pb2.StreamPostsRequest(), timeout=60
                    )
                ]
            )

        streaming = asyncio.gather(drain(), drain())
        latencies = []
        while not streaming.done():
            start = time.perf_counter()
            await users.GetUser(user_service_pb2.GetUserRequest(id=author), timeout=5)
            latencies.append(time.perf_counter() - start)
        assert list(await streaming) == [3000, 3000]
    assert statistics.median(latencies) < 0.2, latencies
