"""SIGTERM, for real, to `python -m service`: health NOT_SERVING, new calls refused, calls in
flight (a unary call and a stream, both blocked on a lock the test holds) still finish OK
within SHUTDOWN_GRACE_SECONDS, then exit 0. A second SIGTERM exits at once.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import grpc
from blog.v1 import post_service_pb2, post_service_pb2_grpc, user_service_pb2, user_service_pb2_grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support import ServerProcess

GRACE = 5.0
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


@asynccontextmanager
async def users_locked(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with pool.acquire() as connection:
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        try:
            yield connection
        finally:
            if not connection.is_closed():
                await transaction.rollback()


async def waiting_on_lock(db: asyncpg.Connection, count: int, within: float = 5.0) -> None:
    end = time.monotonic() + within
    while time.monotonic() < end:
        waiting = await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'blog-service'"
            " AND datname = current_database() AND wait_event_type = 'Lock'"
        )
        if waiting >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"fewer than {count} calls of the service are waiting on the lock")


async def exit_code(process: ServerProcess, within: float) -> int | None:
    assert process.process is not None
    end = time.monotonic() + within
    while time.monotonic() < end:
        code = process.process.poll()
        if code is not None:
            return code
        await asyncio.sleep(0.02)
    return None


async def seed(db: asyncpg.Connection) -> int:
    user_id: int = await db.fetchval(
        "INSERT INTO users (email, username, hashed_password)"
        " VALUES ('shut@example.com', 'shut', 'x') RETURNING id"
    )
    await db.executemany(
        "INSERT INTO posts (author_id, title, content) VALUES ($1, $2, 'c')",
        [(user_id, f"t{i}") for i in range(50)],
    )
    return user_id


async def test_sigterm_drains_in_flight_calls_and_streams_then_exits_0(
    database_url: str, db_pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    user_id = await seed(db)
    process = ServerProcess(
        {"DATABASE_URL": database_url, "SHUTDOWN_GRACE_SECONDS": str(GRACE)}
    ).start()
    try:
        async with aio.insecure_channel(process.address) as channel:
            users = user_service_pb2_grpc.UserServiceStub(channel)
            posts = post_service_pb2_grpc.PostServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
            assert (await watch.read()).status == SERVING

            async with users_locked(db_pool):
                unary = asyncio.ensure_future(
                    users.GetUser(user_service_pb2.GetUserRequest(id=user_id), timeout=20)
                )
                stream = posts.StreamPosts(
                    post_service_pb2.StreamPostsRequest(author_id=user_id), timeout=20
                )
                streamed = asyncio.ensure_future(_collect(stream))
                await waiting_on_lock(db, 2)

                signalled = time.monotonic()
                process.signal(signal.SIGTERM)

                # Health turns NOT_SERVING (seen on a Watch opened before the signal).
                update = await asyncio.wait_for(watch.read(), 3)
                assert update.status == NOT_SERVING

                # New calls are refused, on a fresh connection.
                async with aio.insecure_channel(process.address) as fresh:
                    with_new = user_service_pb2_grpc.UserServiceStub(fresh)
                    try:
                        await with_new.GetUser(
                            user_service_pb2.GetUserRequest(id=user_id), timeout=1
                        )
                        refused: Any = None
                    except grpc.RpcError as error:
                        refused = error.code()
                    assert refused == grpc.StatusCode.UNAVAILABLE

                await asyncio.sleep(0.3)  # the in-flight calls keep waiting meanwhile
                assert not unary.done() and not streamed.done()
            # Lock released: both calls complete normally.
            user = await asyncio.wait_for(unary, GRACE)
            assert user.id == user_id
            assert len(await asyncio.wait_for(streamed, GRACE)) == 50
        code = await exit_code(process, GRACE + 2)
        assert code == 0, process.output()
        assert time.monotonic() - signalled < GRACE + 2
        assert "stopped" in process.output()
    finally:
        process.stop()


async def _collect(stream: Any) -> list[Any]:
    return [post async for post in stream]


async def test_in_flight_call_past_the_grace_period_is_cut_off_and_exit_is_0(
    database_url: str, db_pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    user_id = await seed(db)
    process = ServerProcess({"DATABASE_URL": database_url, "SHUTDOWN_GRACE_SECONDS": "0.5"}).start()
    try:
        async with aio.insecure_channel(process.address) as channel, users_locked(db_pool):
            users = user_service_pb2_grpc.UserServiceStub(channel)
            call = asyncio.ensure_future(
                users.GetUser(user_service_pb2.GetUserRequest(id=user_id), timeout=20)
            )
            await waiting_on_lock(db, 1)
            process.signal(signal.SIGTERM)
            code = await exit_code(process, 5)
            assert code == 0, process.output()
            try:
                await call
                outcome: Any = grpc.StatusCode.OK
            except grpc.RpcError as error:
                outcome = error.code()
            assert outcome in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        # The statement the cut-off call was running does not outlive the process.
        await asyncio.sleep(0.2)
        left = await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'blog-service'"
            " AND datname = current_database() AND state IS DISTINCT FROM 'idle'"
        )
        assert left == 0
    finally:
        process.stop()


async def test_second_sigterm_forces_exit_at_once(
    database_url: str, db_pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    user_id = await seed(db)
    process = ServerProcess({"DATABASE_URL": database_url, "SHUTDOWN_GRACE_SECONDS": "30"}).start()
    try:
        async with aio.insecure_channel(process.address) as channel, users_locked(db_pool):
            users = user_service_pb2_grpc.UserServiceStub(channel)
            call = asyncio.ensure_future(
                users.GetUser(user_service_pb2.GetUserRequest(id=user_id), timeout=20)
            )
            await waiting_on_lock(db, 1)
            process.signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            assert process.process is not None and process.process.poll() is None  # draining
            forced = time.monotonic()
            process.signal(signal.SIGTERM)
            code = await exit_code(process, 3)
            assert code is not None, "a second SIGTERM did not force the exit"
            assert code != 0  # a forced exit is not a clean one
            assert time.monotonic() - forced < 2
            call.cancel()
    finally:
        process.stop()
