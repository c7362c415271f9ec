"""One client cannot starve the others: streams that are never read, streams of large rows.

Each test is the attack, run against a real server and a real PostgreSQL, asserting what the
other clients (and an operator looking at PostgreSQL) see.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
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
from tests.support import (
    ServerProcess,
    checked_out,
    make_user,
    plain,
    rich_error,
    serving,
    sessions_by_state,
    started_server,
    tables_locked,
    until,
)

SERVING = health_pb2.HealthCheckResponse.SERVING


async def _author_with_posts(db: asyncpg.Connection, name: str, count: int, size: int) -> int:
    author = await make_user(db, name)
    await db.execute(
        "INSERT INTO posts (author_id, title, content)"
        " SELECT $1, 't' || g, repeat('x', $2) FROM generate_series(1, $3) g",
        author,
        size,
        count,
    )
    return author


@pytest.fixture
async def small_server(database_url: str, db_pool: asyncpg.Pool) -> AsyncIterator[Server]:
    """A pool of 4 (so 2 streams at most) and a 2-second stream idle timeout."""
    async with serving(
        database_url, DB_POOL_SIZE=4, STREAM_IDLE_TIMEOUT_SECONDS=2, DB_POOL_TIMEOUT=5
    ) as server:
        yield server


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
        assert (await sessions_by_state(db)).get(
            "idle in transaction", 0
        ) >= 1  # the two open snapshots

        await asyncio.sleep(3.0)  # past STREAM_IDLE_TIMEOUT_SECONDS
        assert (await sessions_by_state(db)).get("idle in transaction", 0) == 0
        assert small_server.streams.active == 0
        assert checked_out(small_server) == 0
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
        db = await asyncpg.connect(plain(database_url))
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


def test_a_burst_of_2500_concurrent_calls_ends_none_cancelled(database_url: str) -> None:
    """2,500 GetUser at once over 8 connections: every call ends OK or RESOURCE_EXHAUSTED,
    never CANCELLED (nobody cancelled) nor UNAVAILABLE. Before: 6-23 % CANCELLED, from gRPC
    core's queue of calls the application had not picked up yet."""

    async def burst(address: str) -> Counter[str]:
        channels = [aio.insecure_channel(address) for _ in range(8)]
        stubs: list[Any] = [user_service_pb2_grpc.UserServiceStub(c) for c in channels]

        async def one(i: int) -> str:
            try:
                await stubs[i % 8].GetUser(user_service_pb2.GetUserRequest(id=1), timeout=60)
            except aio.AioRpcError as error:
                return (
                    f"{error.code().name}: {(error.details() or '')[:80]}"
                    if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED
                    else "RESOURCE_EXHAUSTED"
                )
            return "OK"

        try:
            return Counter(await asyncio.gather(*(one(i) for i in range(2500))))
        finally:
            for channel in channels:
                await channel.close(None)

    async def seed() -> None:
        db = await asyncpg.connect(plain(database_url))
        try:
            await db.execute("TRUNCATE users, posts RESTART IDENTITY CASCADE")
            await _author_with_posts(db, "bursty", 1, 10)
        finally:
            await db.close()

    asyncio.run(seed())
    # A small pool: the burst is about the gRPC layer, and PostgreSQL may be shared.
    env = {"DATABASE_URL": database_url, "DB_POOL_SIZE": "4", "DB_POOL_TIMEOUT": "30"}
    with ServerProcess(env) as server:
        codes = asyncio.run(burst(server.address))
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, codes
    assert codes["OK"] >= 1000, codes


async def test_calls_past_max_concurrent_rpcs_are_refused_at_once_with_details(
    database_url: str, db_pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    """MAX_CONCURRENT_RPCS=20 and 40 writes blocked on a lock: 20 are refused at once,
    RESOURCE_EXHAUSTED with reason SERVER_OVERLOADED; the 20 admitted commit once the lock goes."""
    author = await _author_with_posts(db, "admitted", 0, 1)
    server = await started_server(database_url, MAX_CONCURRENT_RPCS=20)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub: Any = post_service_pb2_grpc.PostServiceStub(channel)
            async with tables_locked(db_pool, "posts"):
                calls = [
                    stub.CreatePost(
                        post_service_pb2.CreatePostRequest(
                            author_id=author, title="t", content="c"
                        ),
                        timeout=30,
                    )
                    for _ in range(40)
                ]
                start = time.monotonic()
                await until(lambda: sum(c.done() for c in calls) >= 20, within=10)
                assert server.admission.active == 20
                refused = []
                for call in calls:
                    if call.done():
                        try:
                            await call
                        except aio.AioRpcError as error:
                            refused.append(rich_error(error))
                elapsed = time.monotonic() - start
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        await server.stop()
    assert len(refused) == 20 and elapsed < 5, (len(refused), elapsed)
    assert {(r.code, r.reason) for r in refused} == {
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "SERVER_OVERLOADED")
    }
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 20
    assert await db.fetchval("SELECT count(*) FROM posts WHERE author_id = $1", author) == 20


def test_each_connection_is_offered_a_bounded_number_of_streams(database_url: str) -> None:
    """The server advertises SETTINGS_MAX_CONCURRENT_STREAMS (1000), read by a raw HTTP/2
    client: before, it advertised none, so one connection could open 50,000 streams."""
    import socket

    import h2.config
    import h2.connection
    import h2.events
    import h2.settings

    with ServerProcess({"DATABASE_URL": database_url}) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        connection.initiate_connection()
        sock.sendall(connection.data_to_send())
        advertised = None
        deadline = time.monotonic() + 5
        while advertised is None and time.monotonic() < deadline:
            for event in connection.receive_data(sock.recv(65535)):
                if isinstance(event, h2.events.RemoteSettingsChanged):
                    changed = event.changed_settings.get(
                        h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS
                    )
                    advertised = changed.new_value if changed else None
        sock.close()
    assert advertised == 1000


def _open_bodiless_streams(port: int, count: int, seconds: float) -> dict[int, str]:
    """`count` streams on one raw HTTP/2 connection, each sending headers and never a body;
    what ended each of them within `seconds` ('grpc-status N' or 'reset')."""
    import socket

    import h2.config
    import h2.connection
    import h2.events

    sock = socket.create_connection(("127.0.0.1", port), timeout=0.5)
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/blog.v1.UserService/GetUser"),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    for _ in range(count):
        connection.send_headers(connection.get_next_available_stream_id(), headers)
    sock.sendall(connection.data_to_send())
    ended: dict[int, str] = {}
    deadline = time.monotonic() + seconds
    while len(ended) < count and time.monotonic() < deadline:
        try:
            data = sock.recv(1 << 16)
        except TimeoutError:
            continue
        if not data:
            break
        for event in connection.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                status = dict(event.headers).get(b"grpc-status")
                if status is not None:
                    ended[event.stream_id] = f"grpc-status {status.decode()}"
            elif isinstance(event, h2.events.StreamReset):
                ended.setdefault(event.stream_id, "reset")
        sock.sendall(connection.data_to_send())
    sock.close()
    return ended


def test_streams_whose_request_never_arrives_are_ended_and_free_their_place(
    database_url: str,
) -> None:
    """900 streams that send headers and no request, from a client without a token, on a
    server allowing 200 calls at once (400 picked up by gRPC): each is ended within
    DEFAULT_TIMEOUT_SECONDS (1 s here) with DEADLINE_EXCEEDED, and a well-behaved client is
    served right after. Before, such streams stayed open as long as their connection did."""
    env = {
        "DATABASE_URL": database_url,
        "DEFAULT_TIMEOUT_SECONDS": "1",
        "MAX_CONCURRENT_RPCS": "200",
    }
    with ServerProcess(env) as server:
        ended = _open_bodiless_streams(server.port, 900, seconds=15)
        assert len(ended) == 900, f"{900 - len(ended)} streams still open"
        assert set(ended.values()) <= {"grpc-status 4", "grpc-status 8", "reset"}, set(
            ended.values()
        )
        assert "grpc-status 4" in ended.values()
        with grpc.insecure_channel(server.address) as channel:
            stub: Any = user_service_pb2_grpc.UserServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.GetUser(user_service_pb2.GetUserRequest(id=10**9), timeout=5)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # served, not refused


async def test_a_stream_slow_to_find_its_rows_is_not_idle(
    small_server: Server, db: asyncpg.Connection, db_pool: asyncpg.Pool
) -> None:
    """Only a write waiting for the client counts as idle: a stream whose query waits 3 s on a
    lock (past the 2 s idle timeout) and then delivers, to a client that reads, ends OK."""
    author = await _author_with_posts(db, "patient", 20, 100)
    async with aio.insecure_channel(f"127.0.0.1:{small_server.port}") as channel:
        stub: Any = post_service_pb2_grpc.PostServiceStub(channel)
        async with tables_locked(db_pool, "posts"):
            call = stub.StreamPosts(post_service_pb2.StreamPostsRequest(author_id=author))
            await asyncio.sleep(3.0)
        received = [post async for post in call]
    assert len(received) == 20
