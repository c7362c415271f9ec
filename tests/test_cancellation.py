"""Clients that give up: 500 calls in flight, blocked for real on a lock the test holds, are
cancelled by their clients. Nothing they wrote survives, every connection goes back to the
pool, and PostgreSQL is left with no statement of ours running and no session idle in a
transaction. Streams cancelled mid-way too.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
from blog.v1 import post_service_pb2, resources_pb2, user_service_pb2
from google.protobuf import field_mask_pb2

from service.server import Server
from tests.support import (
    checked_out,
    make_user,
    sessions_by_state,
    settle,
    tables_locked,
    waiting_on_lock,
)

if TYPE_CHECKING:
    from blog.v1.post_service_pb2_grpc import PostServiceAsyncStub as PostStub
    from blog.v1.user_service_pb2_grpc import UserServiceAsyncStub as UserStub


async def settled(
    db: asyncpg.Connection, server: Server, within: float = 5.0
) -> tuple[int, dict[str, int]]:
    """(connections checked out, our non-idle sessions by state), once they reach zero."""

    async def still_held() -> tuple[int, dict[str, int]] | None:
        held = checked_out(server) + server.streams.active  # a stream's place is given back last
        busy = {s: n for s, n in (await sessions_by_state(db)).items() if s != "idle"}
        return (held, busy) if held or busy else None

    return await settle(still_held, within, every=0.05) or (0, {})


async def test_500_cancelled_calls_roll_back_and_release_everything(
    server: Server, users: UserStub, posts: PostStub, db: asyncpg.Connection, db_pool: asyncpg.Pool
) -> None:
    author = await make_user(db, "author")
    before = dict(await db.fetchrow("SELECT * FROM users WHERE id = $1", author))
    calls: list[Any] = []
    call: Any

    async with tables_locked(db_pool, "users", "posts"):
        for i in range(500):
            kind = i % 5
            if kind == 0:
                call = posts.CreatePost(
                    post_service_pb2.CreatePostRequest(
                        author_id=author, title=f"t{i}", content="c"
                    ),
                    timeout=30,
                )
            elif kind == 1:
                call = users.UpdateUser(
                    user_service_pb2.UpdateUserRequest(
                        user=resources_pb2.User(id=author, username=f"renamed{i}"),
                        update_mask=field_mask_pb2.FieldMask(paths=["username"]),
                    ),
                    timeout=30,
                )
            elif kind == 2:
                call = posts.BatchCreatePosts(
                    post_service_pb2.BatchCreatePostsRequest(
                        requests=[
                            post_service_pb2.CreatePostRequest(
                                author_id=author, title=f"b{i}-{j}", content="c"
                            )
                            for j in range(3)
                        ]
                    ),
                    timeout=30,
                )
            elif kind == 3:
                call = users.CreateUser(
                    user_service_pb2.CreateUserRequest(
                        email=f"new{i}@example.com", username=f"new{i}", password="password-123"
                    ),
                    timeout=30,
                )
            else:
                call = users.GetUser(user_service_pb2.GetUserRequest(id=author), timeout=30)
            calls.append(call)
        # Every pooled connection is now busy waiting on the lock; the rest wait for the pool.
        assert await waiting_on_lock(db, 15) >= 15
        await asyncio.sleep(0.2)
        for call in calls:
            call.cancel()
        codes = []
        for call in calls:
            try:
                await call
                codes.append(grpc.StatusCode.OK)
            except asyncio.CancelledError:
                codes.append(grpc.StatusCode.CANCELLED)
            except grpc.RpcError as error:
                codes.append(error.code())
        # CreateUser calls past the password-hashing capacity were refused at once, before
        # they did anything (RESOURCE_EXHAUSTED); every other call was cancelled.
        refused = {i % 5 for i, code in enumerate(codes) if code != grpc.StatusCode.CANCELLED}
        assert refused <= {3}, refused
        assert set(codes) <= {grpc.StatusCode.CANCELLED, grpc.StatusCode.RESOURCE_EXHAUSTED}
        # Checked while the lock is held: a statement left behind would still be waiting on it.
        checked_out, busy = await settled(db, server)
        assert checked_out == 0
        assert busy == {}, busy

    await asyncio.sleep(0.2)  # nothing lands late once the lock is gone
    assert await db.fetchval("SELECT count(*) FROM posts") == 0
    assert await db.fetchval("SELECT count(*) FROM users") == 1
    assert dict(await db.fetchrow("SELECT * FROM users WHERE id = $1", author)) == before
    checked_out, busy = await settled(db, server)
    assert (checked_out, busy) == (0, {})
    assert "idle in transaction" not in await sessions_by_state(db)
    # The service is healthy afterwards: every pool serves again.
    assert (await users.GetUser(user_service_pb2.GetUserRequest(id=author), timeout=5)).id == author
    post = await posts.CreatePost(
        post_service_pb2.CreatePostRequest(author_id=author, title="after", content="c"), timeout=5
    )
    assert post.id > 0


async def test_cancelled_streams_blocked_on_a_lock_release_everything(
    server: Server, posts: PostStub, db: asyncpg.Connection, db_pool: asyncpg.Pool
) -> None:
    author = await make_user(db, "streamer")
    await db.executemany(
        "INSERT INTO posts (author_id, title, content) VALUES ($1, $2, 'c')",
        [(author, f"t{i}") for i in range(20)],
    )
    async with tables_locked(db_pool, "posts"):
        streams = [
            posts.StreamPosts(post_service_pb2.StreamPostsRequest(author_id=author), timeout=30)
            for _ in range(50)
        ]
        readers = [asyncio.ensure_future(stream.read()) for stream in streams]
        assert await waiting_on_lock(db, 10) >= 10
        for stream in streams:
            stream.cancel()
        for reader in readers:
            with suppress(asyncio.CancelledError, grpc.RpcError):
                await reader
        checked_out, busy = await settled(db, server)
        assert (checked_out, busy) == (0, {})
    assert await db.fetchval("SELECT count(*) FROM posts") == 20


async def test_streams_cancelled_mid_way_release_their_cursor_and_transaction(
    server: Server, posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db, "bulk")
    await db.execute(
        "INSERT INTO posts (author_id, title, content)"
        " SELECT $1, 't' || g, repeat('x', 500) FROM generate_series(1, 20000) g",
        author,
    )
    streams = [
        posts.StreamPosts(post_service_pb2.StreamPostsRequest(author_id=author), timeout=30)
        for _ in range(10)  # the stream capacity: half the read pool (DB_POOL_SIZE = 20)
    ]
    for stream in streams:
        for _ in range(5):
            assert (await stream.read()).author_id == author  # type: ignore[attr-defined]
    # Every stream is now mid-way through its server-side cursor.
    for stream in streams:
        stream.cancel()
    checked_out, busy = await settled(db, server)
    assert (checked_out, busy) == (0, {})
    assert "idle in transaction" not in await sessions_by_state(db)


async def sessions_opened(db: asyncpg.Connection) -> int:
    """Sessions PostgreSQL has opened on this database so far (counted when a backend starts;
    a backend that exits has always reported it)."""
    await asyncio.sleep(1.1)  # PostgreSQL flushes session statistics at most once a second
    await db.execute("SELECT pg_stat_clear_snapshot()")
    opened: int = await db.fetchval(
        "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
    )
    return opened


async def test_300_cancelled_streams_give_their_connections_back_to_the_pool(
    server: Server, posts: PostStub, db: asyncpg.Connection
) -> None:
    """Read one post, then cancel, 300 times: each stream's connection is rolled back and
    pooled, not closed. Before, 500 such streams forked 482 new PostgreSQL backends."""
    author = await make_user(db, "cancel_reuse")
    await db.execute(
        "INSERT INTO posts (author_id, title, content)"
        " SELECT $1, 't' || g, repeat('x', 200) FROM generate_series(1, 2000) g",
        author,
    )
    before = await sessions_opened(db)
    for _ in range(60):
        streams = [
            posts.StreamPosts(post_service_pb2.StreamPostsRequest(author_id=author), timeout=30)
            for _ in range(5)
        ]
        for stream in streams:
            assert (await stream.read()).author_id == author  # type: ignore[attr-defined]
        for stream in streams:
            stream.cancel()
        # The server sees each cancellation a few milliseconds later; only then is the
        # stream's place free again (a stream opened sooner may be refused, by design).
        assert (await settled(db, server))[0] == 0
    checked_out, busy = await settled(db, server)
    assert (checked_out, busy) == (0, {})
    opened = await sessions_opened(db) - before
    assert opened < 60, f"{opened} new PostgreSQL sessions for 300 cancelled streams"


async def test_writes_cut_by_their_deadline_give_their_connections_back(
    server: Server, posts: PostStub, db: asyncpg.Connection, db_pool: asyncpg.Pool
) -> None:
    """200 CreatePost, 20 at a time, each blocked inside PostgreSQL on a lock the test holds
    until its 150 ms deadline passes: all end DEADLINE_EXCEEDED, nothing is written, and each
    connection is brought back to a known state (the cancel request answered, a ROLLBACK) and
    pooled rather than closed. Before, 500 deadline-cut writes forked 282 new backends."""
    author = await make_user(db, "deadline_reuse")
    before = await sessions_opened(db)
    codes: dict[grpc.StatusCode, int] = {}
    for _ in range(10):
        async with tables_locked(db_pool, "posts"):
            calls = [
                posts.CreatePost(
                    post_service_pb2.CreatePostRequest(author_id=author, title="t", content="c"),
                    timeout=0.15,
                )
                for _ in range(20)
            ]
            for call in calls:
                try:
                    await call
                    code = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as error:
                    code = error.code()
                codes[code] = codes.get(code, 0) + 1
    assert codes == {grpc.StatusCode.DEADLINE_EXCEEDED: 200}, codes
    checked_out, busy = await settled(db, server)
    assert (checked_out, busy) == (0, {})
    assert await db.fetchval("SELECT count(*) FROM posts WHERE author_id = $1", author) == 0
    opened = await sessions_opened(db) - before
    assert opened < 60, f"{opened} new PostgreSQL sessions for 200 deadline-cut writes"
