"""Per-call sessions and transactions: commit on success, roll back on every kind of failure,
read-only calls cannot write, and the connection always goes back to the pool.

Some tests serve hand-written handlers on our API's method paths through the project's real
interceptor chain (service.interceptors.chain.build_chain) and the real server's database: that is the only
way for a client to make a handler write a row and then fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import pytest
from blog.v1 import (
    post_service_pb2,
    resources_pb2,
    user_service_pb2,
)
from google.protobuf import field_mask_pb2
from grpc import aio

from service.db import errors as db_errors
from service.db.engine import APPLICATION_NAME, PROBE_APPLICATION_NAME
from service.db.session import bind_session, current_session, unbind_session
from service.domain.entities import NewPost
from service.domain.errors import ReadOnlyViolation
from service.interceptors.chain import build_chain
from service.repositories.posts import PostRepository
from service.server import Server
from tests.support import make_user, rich_error, settle, settled_checked_out

Handler = Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[Any]]
CustomCall = Callable[..., Coroutine[Any, Any, Any]]

INSERT_MARKER = (
    "INSERT INTO users (email, username, hashed_password)"
    " VALUES ('marker@example.com', 'marker', 'x')"
)


async def execute(sql: str) -> None:
    """Runs `sql` on the current call's connection, as a repository would."""
    await (await current_session().connection()).execute(sql)


if TYPE_CHECKING:
    from blog.v1.post_service_pb2_grpc import PostServiceAsyncStub as PostStub
    from blog.v1.user_service_pb2_grpc import UserServiceAsyncStub as UserStub


async def marker_rows(db: asyncpg.Connection) -> int:
    count: int = await db.fetchval("SELECT count(*) FROM users WHERE username = 'marker'")
    return count


@pytest.fixture
async def custom_server(server: Server) -> AsyncIterator[CustomCall]:
    """Serves one handler on one of our API's method paths, behind the real interceptors.

    Returns `call(method_name, handler)` which invokes PostService/<method_name> with a
    GetPostRequest-shaped message and returns the response (or raises grpc.RpcError).
    """
    servers: list[aio.Server] = []
    channels: list[aio.Channel] = []

    async def call(method_name: str, handler: Handler, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        # A chain of its own: a chain keeps the handler it composed for each method path.
        instance = aio.server(interceptors=[build_chain(server.settings, server.database)])
        instance.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    "blog.v1.PostService",
                    {
                        method_name: grpc.unary_unary_rpc_method_handler(
                            handler,
                            request_deserializer=post_service_pb2.GetPostRequest.FromString,
                            response_serializer=resources_pb2.Post.SerializeToString,
                        )
                    },
                )
            ]
        )
        port = instance.add_insecure_port("127.0.0.1:0")
        await instance.start()
        servers.append(instance)
        channel = aio.insecure_channel(f"127.0.0.1:{port}")
        channels.append(channel)
        invoke = channel.unary_unary(
            f"/blog.v1.PostService/{method_name}",
            request_serializer=post_service_pb2.GetPostRequest.SerializeToString,
            response_deserializer=resources_pb2.Post.FromString,
        )
        return await invoke(post_service_pb2.GetPostRequest(id=1), timeout=timeout)

    yield call
    for channel in channels:
        await channel.close(None)
    for instance in servers:
        await instance.stop(None)


# --- failed calls through the real service leave nothing behind --------------------------------


async def test_failed_batch_with_unknown_author_in_the_middle_leaves_zero_posts(
    server: Server, posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db)
    items = [
        post_service_pb2.CreatePostRequest(author_id=author, title=f"t{i}", content="c")
        for i in range(9)
    ]
    items[4].author_id = author + 100

    with pytest.raises(grpc.RpcError) as caught:
        await posts.BatchCreatePosts(post_service_pb2.BatchCreatePostsRequest(requests=items))

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert await db.fetchval("SELECT count(*) FROM posts") == 0
    assert await settled_checked_out(server) == 0


async def test_already_exists_update_is_rolled_back_entirely(
    server: Server, users: UserStub, db: asyncpg.Connection
) -> None:
    await make_user(db, "taken")
    mine = await make_user(db, "mine")
    before = dict(await db.fetchrow("SELECT * FROM users WHERE id = $1", mine))

    with pytest.raises(grpc.RpcError) as caught:
        await users.UpdateUser(
            user_service_pb2.UpdateUserRequest(
                user=resources_pb2.User(id=mine, email="fresh@example.com", username="taken"),
                update_mask=field_mask_pb2.FieldMask(paths=["email", "username"]),
            )
        )

    assert rich_error(caught.value).code == grpc.StatusCode.ALREADY_EXISTS
    assert dict(await db.fetchrow("SELECT * FROM users WHERE id = $1", mine)) == before
    assert await settled_checked_out(server) == 0


async def test_aborted_stale_etag_update_is_rolled_back(
    server: Server, posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db)
    post = await posts.CreatePost(
        post_service_pb2.CreatePostRequest(author_id=author, title="Old", content="c")
    )
    await db.execute("UPDATE posts SET version = version + 1 WHERE id = $1", post.id)
    before = dict(await db.fetchrow("SELECT * FROM posts WHERE id = $1", post.id))

    with pytest.raises(grpc.RpcError) as caught:
        await posts.UpdatePost(
            post_service_pb2.UpdatePostRequest(
                post=resources_pb2.Post(id=post.id, title="New", content="New", etag=post.etag)
            )
        )

    assert rich_error(caught.value).code == grpc.StatusCode.ABORTED
    assert dict(await db.fetchrow("SELECT * FROM posts WHERE id = $1", post.id)) == before
    assert await settled_checked_out(server) == 0


async def test_successful_write_is_committed_and_visible_to_other_connections(
    server: Server, posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db)

    post = await posts.CreatePost(
        post_service_pb2.CreatePostRequest(author_id=author, title="kept", content="c")
    )

    assert await db.fetchval("SELECT title FROM posts WHERE id = $1", post.id) == "kept"
    assert await settled_checked_out(server) == 0


# --- read-only calls cannot write --------------------------------------------------------------


async def test_reader_connections_are_read_only_in_postgresql(server: Server) -> None:
    async with server.database.reader.connect() as connection:
        setting = (await connection.exec_driver_sql("SHOW default_transaction_read_only")).scalar()
    async with server.database.writer.connect() as connection:
        writer_setting = (
            await connection.exec_driver_sql("SHOW default_transaction_read_only")
        ).scalar()

    assert setting == "on"
    assert writer_setting == "off"


async def test_repository_write_on_a_read_session_is_refused_by_postgresql(
    server: Server, db: asyncpg.Connection
) -> None:
    author = await make_user(db)
    session = server.database.session(read_only=True)
    token = bind_session(session)
    try:
        with pytest.raises(Exception) as caught:
            await PostRepository().create_many([NewPost(author, "t", "c", False)])
    finally:
        unbind_session(token)
        await session.end(caught.value)

    assert isinstance(db_errors.translate(caught.value), ReadOnlyViolation), caught.value
    assert await db.fetchval("SELECT count(*) FROM posts") == 0


@pytest.mark.parametrize("method", ["GetPost", "ListPosts"])
async def test_no_side_effects_method_cannot_write_even_if_its_handler_tries(
    server: Server, custom_server: CustomCall, db: asyncpg.Connection, method: str
) -> None:
    async def writes(request: Any, context: aio.ServicerContext[Any, Any]) -> resources_pb2.Post:
        await execute(INSERT_MARKER)
        return resources_pb2.Post(id=1)

    with pytest.raises(grpc.RpcError) as caught:
        await custom_server(method, writes)

    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INTERNAL
    assert "INSERT" not in error.message
    assert await marker_rows(db) == 0
    assert await settled_checked_out(server) == 0


async def test_same_writing_handler_on_a_write_method_commits(
    server: Server, custom_server: CustomCall, db: asyncpg.Connection
) -> None:
    """Control for the read-only test: the handler itself is able to write."""

    async def writes(request: Any, context: aio.ServicerContext[Any, Any]) -> resources_pb2.Post:
        await execute(INSERT_MARKER)
        return resources_pb2.Post(id=1)

    response = await custom_server("CreatePost", writes)

    assert response.id == 1
    assert await marker_rows(db) == 1
    assert await settled_checked_out(server) == 0


# --- handlers that fail roll back --------------------------------------------------------------


async def test_handler_that_aborts_after_writing_is_rolled_back_and_client_sees_its_code(
    server: Server, custom_server: CustomCall, db: asyncpg.Connection
) -> None:
    async def aborts(request: Any, context: aio.ServicerContext[Any, Any]) -> resources_pb2.Post:
        await execute(INSERT_MARKER)
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "x")
        raise AssertionError("abort returned")

    with pytest.raises(grpc.RpcError) as caught:
        await custom_server("CreatePost", aborts)

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == "x"
    assert await marker_rows(db) == 0
    assert await settled_checked_out(server) == 0


async def test_handler_that_raises_after_writing_is_rolled_back_as_bare_internal(
    server: Server, custom_server: CustomCall, db: asyncpg.Connection
) -> None:
    async def raises(request: Any, context: aio.ServicerContext[Any, Any]) -> resources_pb2.Post:
        await execute(INSERT_MARKER)
        raise RuntimeError("boom: SELECT hashed_password FROM users")

    with pytest.raises(grpc.RpcError) as caught:
        await custom_server("CreatePost", raises)

    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INTERNAL
    assert error.reason == "INTERNAL" and error.domain == "blog.v1"
    for leak in ("boom", "SELECT", "hashed_password", "Traceback", "RuntimeError", ".py"):
        assert leak not in error.message
    assert await marker_rows(db) == 0
    assert await settled_checked_out(server) == 0


async def test_handler_whose_sql_fails_after_writing_is_rolled_back_without_leaking_sql(
    server: Server, custom_server: CustomCall, db: asyncpg.Connection
) -> None:
    async def bad_sql(request: Any, context: aio.ServicerContext[Any, Any]) -> resources_pb2.Post:
        await execute(INSERT_MARKER)
        await execute("SELECT secret_column FROM no_such_table")
        return resources_pb2.Post(id=1)

    with pytest.raises(grpc.RpcError) as caught:
        await custom_server("CreatePost", bad_sql)

    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INTERNAL
    for leak in ("no_such_table", "secret_column", "SELECT", "Traceback", "asyncpg"):
        assert leak not in error.message
    assert await marker_rows(db) == 0
    assert await settled_checked_out(server) == 0


async def test_handler_past_its_deadline_after_writing_is_rolled_back(
    server: Server, custom_server: CustomCall, db: asyncpg.Connection
) -> None:
    async def slow(request: Any, context: aio.ServicerContext[Any, Any]) -> resources_pb2.Post:
        await execute(INSERT_MARKER)
        await asyncio.sleep(5)
        return resources_pb2.Post(id=1)

    with pytest.raises(grpc.RpcError) as caught:
        await custom_server("CreatePost", slow, timeout=0.5)

    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert await settled_checked_out(server) == 0
    assert await marker_rows(db) == 0


async def test_handler_whose_client_cancels_after_writing_is_rolled_back(
    server: Server, custom_server: CustomCall, db: asyncpg.Connection
) -> None:
    wrote = asyncio.Event()

    async def waits(request: Any, context: aio.ServicerContext[Any, Any]) -> resources_pb2.Post:
        await execute(INSERT_MARKER)
        wrote.set()
        await asyncio.sleep(5)
        return resources_pb2.Post(id=1)

    call = asyncio.create_task(custom_server("CreatePost", waits))
    await asyncio.wait_for(wrote.wait(), 5)
    assert server.database.writer.pool.checkedout() == 1  # type: ignore[attr-defined]
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call

    assert await settled_checked_out(server) == 0
    assert await marker_rows(db) == 0
    idle: int = await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'"
    )
    assert idle == 0


async def test_the_health_probes_sessions_are_named_apart_from_the_calls(
    server: Server, db: asyncpg.Connection
) -> None:
    """Once a second the probe runs its SELECT 1 in a transaction of its own: under the calls'
    application_name it would show, now and then, as a service session idle in a transaction
    (and pg_stat_activity would count it among the sessions serving calls)."""
    rows: list[asyncpg.Record] = []

    async def probes_missing() -> int:
        nonlocal rows
        rows = await db.fetch(
            "SELECT application_name, query FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = ANY($1)",
            [APPLICATION_NAME, PROBE_APPLICATION_NAME],
        )
        named = sum(1 for r in rows if r["application_name"] == PROBE_APPLICATION_NAME)
        return len(server.database.probes) - named

    await settle(probes_missing, within=3.0)  # the probe reconnects within a second if it must
    probes = [r["query"] for r in rows if r["application_name"] == PROBE_APPLICATION_NAME]
    assert len(probes) == len(server.database.probes), rows
    assert set(probes) <= {"SELECT 1", "COMMIT"}, rows
