"""Foreign-key violations are mapped by constraint name (service.db.errors), from real errors.

A violation of the foreign key a client can cause (a post's author) is NOT_FOUND naming the
missing user; one of any other foreign key is a bug, INTERNAL, not a NOT_FOUND about the wrong
thing. The end-to-end case is the race a client can hit: the author deleted while CreatePost
inserts.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest
from blog.v1 import post_service_pb2
from blog.v1.error_reason_pb2 import ErrorReason

from service.db import errors as db_errors
from service.domain.errors import NotFound
from tests.support import rich_error

if TYPE_CHECKING:
    from blog.v1.post_service_pb2_grpc import PostServiceAsyncStub as PostStub


async def _violation(db: asyncpg.Connection, sql: str, *args: object) -> BaseException:
    with pytest.raises(asyncpg.ForeignKeyViolationError) as caught:
        async with db.transaction():  # a savepoint inside a transaction
            await db.execute(sql, *args)
    error: BaseException = caught.value
    return error


async def test_the_post_author_key_is_a_user_not_found_naming_the_id(
    db: asyncpg.Connection,
) -> None:
    error = await _violation(
        db, "INSERT INTO posts (author_id, title, content) VALUES (424242, 't', 'c')"
    )
    translated = db_errors.translate(error)
    assert isinstance(translated, NotFound)
    assert translated.reason == ErrorReason.USER_NOT_FOUND
    assert "424242" in translated.message


async def test_an_unknown_foreign_key_is_internal_not_a_wrong_not_found(
    db: asyncpg.Connection,
) -> None:
    transaction = db.transaction()  # the table is rolled back with it
    await transaction.start()
    try:
        await db.execute(
            "CREATE TABLE notes (user_id bigint"
            " CONSTRAINT fk_notes_user_id_users REFERENCES users (id))"
        )
        error = await _violation(db, "INSERT INTO notes VALUES (424242)")
    finally:
        await transaction.rollback()
    assert getattr(error, "constraint_name", None) == "fk_notes_user_id_users"
    assert db_errors.translate(error) is None  # the error interceptor makes that INTERNAL


async def test_an_author_deleted_while_its_post_is_inserted_is_not_found(
    posts: PostStub, db: asyncpg.Connection, db_pool: asyncpg.Pool
) -> None:
    """The insert sees the author (its delete is not committed yet), then its foreign-key
    check waits for the deleting transaction, which commits: the key is violated."""
    author = await db.fetchval(
        "INSERT INTO users (email, username, hashed_password)"
        " VALUES ('gone@example.com', 'gone', 'x') RETURNING id"
    )
    async with db_pool.acquire() as deleting:
        transaction = deleting.transaction()
        await transaction.start()
        await deleting.execute("DELETE FROM users WHERE id = $1", author)
        call = asyncio.ensure_future(
            posts.CreatePost(
                post_service_pb2.CreatePostRequest(author_id=author, title="t", content="c"),
                timeout=30,
            )
        )
        blocker = deleting.get_server_pid()
        end = time.monotonic() + 10
        while not await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY (pg_blocking_pids(pid))", blocker
        ):
            assert time.monotonic() < end and not call.done(), "CreatePost never waited"
            await asyncio.sleep(0.02)
        await transaction.commit()
        with pytest.raises(grpc.RpcError) as caught:
            await call
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND")
    assert str(author) in error.message
    assert await db.fetchval("SELECT count(*) FROM posts") == 0
