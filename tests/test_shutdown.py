"""SIGTERM, for real, to `python -m service`: health NOT_SERVING, new calls served for
SHUTDOWN_DRAIN_SECONDS and refused UNAVAILABLE after it, calls in flight (a unary call and a
stream, both blocked on a lock the test holds) still finish OK within SHUTDOWN_GRACE_SECONDS,
none CANCELLED also under steady load, then exit 0. A second SIGTERM exits at once.
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

from tests.support import (
    ServerProcess,
    busy_backends,
    code_of,
    rich_error,
    row_locked,
    tables_locked,
    waiting_on_lock,
)

GRACE = 5.0
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


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

            async with tables_locked(db_pool, "users"):
                unary = asyncio.ensure_future(
                    users.GetUser(user_service_pb2.GetUserRequest(id=user_id), timeout=20)
                )
                stream = posts.StreamPosts(
                    post_service_pb2.StreamPostsRequest(author_id=user_id), timeout=20
                )
                streamed = asyncio.ensure_future(_collect(stream))
                assert await waiting_on_lock(db, 2) >= 2

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


@asynccontextmanager
async def get_user_waiting_on_lock(
    process: ServerProcess, db_pool: asyncpg.Pool, db: asyncpg.Connection, user_id: int
) -> AsyncIterator[asyncio.Future[Any]]:
    """A GetUser to `process`, waiting on a lock of `users` the test holds until the block ends."""
    async with aio.insecure_channel(process.address) as channel, tables_locked(db_pool, "users"):
        users = user_service_pb2_grpc.UserServiceStub(channel)
        call = asyncio.ensure_future(
            users.GetUser(user_service_pb2.GetUserRequest(id=user_id), timeout=20)
        )
        assert await waiting_on_lock(db, 1) >= 1
        yield call


async def test_in_flight_call_past_the_grace_period_is_cut_off_and_exit_is_0(
    database_url: str, db_pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    user_id = await seed(db)
    process = ServerProcess({"DATABASE_URL": database_url, "SHUTDOWN_GRACE_SECONDS": "0.5"}).start()
    try:
        async with get_user_waiting_on_lock(process, db_pool, db, user_id) as call:
            process.signal(signal.SIGTERM)
            code = await exit_code(process, 5)
            assert code == 0, process.output()
            outcome = await code_of(call)
            assert outcome in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        # The statement the cut-off call was running does not outlive the process.
        await asyncio.sleep(0.2)
        assert await busy_backends(db) == []
    finally:
        process.stop()


async def test_second_sigterm_forces_exit_at_once(
    database_url: str, db_pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    user_id = await seed(db)
    process = ServerProcess({"DATABASE_URL": database_url, "SHUTDOWN_GRACE_SECONDS": "30"}).start()
    try:
        async with get_user_waiting_on_lock(process, db_pool, db, user_id) as call:
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


def _create(author_id: int, title: str) -> post_service_pb2.CreatePostRequest:
    return post_service_pb2.CreatePostRequest(author_id=author_id, title=title, content="c")


async def test_sigterm_with_40_writes_waiting_on_a_row_lock_all_commit_and_answer_ok(
    database_url: str, db_pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    user_id = await seed(db)
    process = ServerProcess({"DATABASE_URL": database_url, "SHUTDOWN_GRACE_SECONDS": "10"}).start()
    try:
        async with aio.insecure_channel(process.address) as channel:
            posts = post_service_pb2_grpc.PostServiceStub(channel)
            async with row_locked(db_pool, "users", user_id):
                calls = [
                    asyncio.ensure_future(posts.CreatePost(_create(user_id, f"w{i}"), timeout=20))
                    for i in range(40)
                ]
                assert (
                    await waiting_on_lock(db, 20) >= 20
                )  # the pool's 20; the other 20 wait for one
                await asyncio.sleep(0.5)
                process.signal(signal.SIGTERM)
                await asyncio.sleep(0.05)  # shutdown under way while all 40 still wait
            codes = await asyncio.gather(*(code_of(c) for c in calls))
        assert codes == [grpc.StatusCode.OK] * 40
        committed = await db.fetchval("SELECT count(*) FROM posts WHERE title LIKE 'w%'")
        assert committed == 40
        assert await exit_code(process, 10) == 0, process.output()
    finally:
        process.stop()


async def test_calls_sent_during_the_drain_succeed_and_after_it_new_calls_get_unavailable(
    database_url: str, db_pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    user_id = await seed(db)
    drain = 1.5
    process = ServerProcess(
        {
            "DATABASE_URL": database_url,
            "SHUTDOWN_DRAIN_SECONDS": str(drain),
            "SHUTDOWN_GRACE_SECONDS": "10",
        }
    ).start()
    try:
        async with aio.insecure_channel(process.address) as channel:
            posts = post_service_pb2_grpc.PostServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service="")
            async with row_locked(db_pool, "users", user_id):
                # One write that started before the signal and outlasts the drain.
                held = asyncio.ensure_future(posts.CreatePost(_create(user_id, "held"), timeout=20))
                assert await waiting_on_lock(db, 1) >= 1
                signalled = time.monotonic()
                process.signal(signal.SIGTERM)
                await asyncio.sleep(0.2)
                assert (await health.Check(request, timeout=1)).status == NOT_SERVING
                # During the drain: new calls, on this channel and on a fresh one, are served.
                got = await posts.GetPost(post_service_pb2.GetPostRequest(id=1), timeout=2)
                assert got.id == 1
                async with aio.insecure_channel(process.address) as fresh:
                    fresh_posts = post_service_pb2_grpc.PostServiceStub(fresh)
                    got = await fresh_posts.GetPost(
                        post_service_pb2.GetPostRequest(id=2), timeout=2
                    )
                    assert got.id == 2
                assert time.monotonic() - signalled < drain
                await asyncio.sleep(drain - (time.monotonic() - signalled) + 0.3)
                # After the drain: refused by the service, UNAVAILABLE, and it never ran.
                try:
                    await posts.CreatePost(_create(user_id, "refused"), timeout=2)
                    refused: Any = grpc.StatusCode.OK
                except grpc.RpcError as error:
                    refused = rich_error(error)
                assert refused != grpc.StatusCode.OK
                assert refused.code == grpc.StatusCode.UNAVAILABLE
                assert refused.reason == "SHUTTING_DOWN"
                assert not held.done()
            assert (await asyncio.wait_for(held, 5)).title == "held"
        titles = await db.fetch("SELECT title FROM posts WHERE title IN ('held', 'refused')")
        assert [r["title"] for r in titles] == ["held"]
        assert await exit_code(process, 10) == 0, process.output()
    finally:
        process.stop()


async def test_sigterm_under_steady_write_load_no_call_is_cancelled(
    database_url: str, db: asyncpg.Connection
) -> None:
    """Clients write in a closed loop until the server tells them UNAVAILABLE (go elsewhere)."""
    user_id = await seed(db)
    env = {"DATABASE_URL": database_url, "SHUTDOWN_GRACE_SECONDS": "10", "DB_POOL_SIZE": "10"}
    process = ServerProcess(env).start()
    codes: list[grpc.StatusCode] = []
    stop_at = time.monotonic() + 20

    async def writer(posts: post_service_pb2_grpc.PostServiceStub, index: int) -> None:
        n = 0
        while time.monotonic() < stop_at:
            code = await code_of(posts.CreatePost(_create(user_id, f"l{index}-{n}"), timeout=10))
            codes.append(code)
            n += 1
            if code != grpc.StatusCode.OK:
                return

    try:
        async with (
            aio.insecure_channel(process.address) as one,
            aio.insecure_channel(process.address) as two,
        ):
            stubs = [post_service_pb2_grpc.PostServiceStub(c) for c in (one, two)]
            writers = [asyncio.ensure_future(writer(stubs[i % 2], i)) for i in range(64)]
            await asyncio.sleep(1.5)
            process.signal(signal.SIGTERM)
            await asyncio.wait_for(asyncio.gather(*writers), 25)
        assert await exit_code(process, 10) == 0, process.output()
    finally:
        process.stop()
    ok = codes.count(grpc.StatusCode.OK)
    assert ok > 100, "the load did not run"
    assert grpc.StatusCode.CANCELLED not in codes, {c.name: codes.count(c) for c in set(codes)}
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
    # Every OK committed, and no refused call did.
    assert await db.fetchval("SELECT count(*) FROM posts WHERE title LIKE 'l%'") == ok
