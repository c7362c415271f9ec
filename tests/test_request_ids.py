"""request_id on CreatePost and BatchCreatePosts (AIP-155): a retry never creates twice."""

from __future__ import annotations

import asyncio
import signal
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import pytest
from blog.v1 import post_service_pb2, post_service_pb2_grpc
from grpc import aio

from service.repositories.requests import CLEANUP_BATCH
from tests.support import ServerProcess, failure, make_user
from tests.support.statements import StatementCounter

if TYPE_CHECKING:
    from blog.v1.post_service_pb2_grpc import PostServiceAsyncStub as PostStub

pytestmark = pytest.mark.usefixtures("db_pool")


def create(author: int, request_id: str = "", title: str = "Hello") -> Any:
    return post_service_pb2.CreatePostRequest(
        author_id=author, title=title, content="World", request_id=request_id
    )


def batch(author: int, request_id: str = "", count: int = 3) -> Any:
    return post_service_pb2.BatchCreatePostsRequest(
        requests=[create(author, title=f"post {i}") for i in range(count)], request_id=request_id
    )


async def post_count(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT count(*) FROM posts"))


async def test_a_retry_returns_the_post_the_first_call_created(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db, "retry")
    request_id = str(uuid.uuid4())
    first = await posts.CreatePost(create(author, request_id))
    again = await posts.CreatePost(create(author, request_id))
    assert again == first
    assert await post_count(db) == 1
    # Upper-case is the same UUID.
    assert await posts.CreatePost(create(author, request_id.upper())) == first
    assert await post_count(db) == 1


async def test_a_batch_retry_returns_the_posts_in_request_order(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db, "batchretry")
    request_id = str(uuid.uuid4())
    first = await posts.BatchCreatePosts(batch(author, request_id, 5))
    again = await posts.BatchCreatePosts(batch(author, request_id, 5))
    assert again == first
    assert [p.title for p in again.posts] == [f"post {i}" for i in range(5)]
    assert await post_count(db) == 5


async def test_without_a_request_id_every_call_creates(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db, "plain")
    await posts.CreatePost(create(author))
    await posts.CreatePost(create(author))
    assert await post_count(db) == 2
    assert await db.fetchval("SELECT count(*) FROM post_requests") == 0


async def test_the_same_id_for_another_request_is_request_id_reused(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db, "reuse")
    request_id = str(uuid.uuid4())
    await posts.CreatePost(create(author, request_id, title="first"))
    for other in (
        posts.CreatePost(create(author, request_id, title="second")),
        posts.BatchCreatePosts(batch(author, request_id, 1)),
    ):
        error = await failure(other)
        assert error.code == grpc.StatusCode.ALREADY_EXISTS
        assert error.reason == "REQUEST_ID_REUSED" and request_id in error.message
    assert await post_count(db) == 1


async def test_concurrent_identical_calls_create_one_post(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db, "stampede")
    request_id = str(uuid.uuid4())
    answers = await asyncio.gather(
        *(posts.CreatePost(create(author, request_id)) for _ in range(40))
    )
    assert len({a.id for a in answers}) == 1
    assert await post_count(db) == 1


async def test_concurrent_identical_batches_create_one_batch(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db, "batchstampede")
    request_id = str(uuid.uuid4())
    answers = await asyncio.gather(
        *(posts.BatchCreatePosts(batch(author, request_id, 10)) for _ in range(20))
    )
    assert len({tuple(p.id for p in a.posts) for a in answers}) == 1
    assert await post_count(db) == 10


@pytest.mark.parametrize("bad", ["nope", "1234", str(uuid.uuid4()) + "x", f"{{{uuid.uuid4()}}}"])
async def test_a_request_id_that_is_not_a_uuid_is_invalid_argument(
    posts: PostStub, db: asyncpg.Connection, bad: str
) -> None:
    author = await make_user(db, "badid")
    error = await failure(posts.CreatePost(create(author, bad)))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in error.violations
    error = await failure(posts.BatchCreatePosts(batch(author, bad)))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in error.violations
    assert await post_count(db) == 0


async def test_a_batch_item_with_its_own_request_id_is_invalid_argument(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db, "itemid")
    request = batch(author, str(uuid.uuid4()), 2)
    request.requests[1].request_id = str(uuid.uuid4())
    error = await failure(posts.BatchCreatePosts(request))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert list(error.violations) == ["requests[1].request_id"]
    assert await post_count(db) == 0


async def test_a_retry_after_the_post_was_deleted_is_not_found(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db, "deleted")
    request_id = str(uuid.uuid4())
    first = await posts.CreatePost(create(author, request_id))
    await posts.DeletePost(post_service_pb2.DeletePostRequest(id=first.id))
    error = await failure(posts.CreatePost(create(author, request_id)))
    assert error.code == grpc.StatusCode.NOT_FOUND and error.reason == "POST_NOT_FOUND"
    assert str(first.id) in error.message
    assert await post_count(db) == 0


async def test_a_failed_first_call_leaves_the_id_free(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    request_id = str(uuid.uuid4())
    error = await failure(posts.CreatePost(create(987654, request_id)))
    assert error.reason == "USER_NOT_FOUND"
    assert await db.fetchval("SELECT count(*) FROM post_requests") == 0
    author = await make_user(db, "later")
    created = await posts.CreatePost(create(author, request_id))
    assert created.author_id == author


async def test_an_id_is_remembered_for_24_hours_and_expired_ids_are_cleaned_up(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db, "expiry")
    expired = CLEANUP_BATCH + 5
    await db.execute(
        "INSERT INTO post_requests (request_id, fingerprint, post_ids, expires_at)"
        " SELECT gen_random_uuid(), '\\x00', '{}', now() - interval '1 minute' * g"
        " FROM generate_series(1, $1) g",
        expired,
    )
    request_id = uuid.uuid4()
    await posts.CreatePost(create(author, str(request_id)))
    kept = await db.fetchval(
        "SELECT expires_at - now() FROM post_requests WHERE request_id = $1", request_id
    )
    assert kept >= timedelta(hours=24) - timedelta(minutes=1)
    left = await db.fetchval("SELECT count(*) FROM post_requests WHERE expires_at < now()")
    assert left == expired - CLEANUP_BATCH  # a bounded number per insert, oldest first
    await posts.CreatePost(create(author, str(uuid.uuid4())))
    assert await db.fetchval("SELECT count(*) FROM post_requests WHERE expires_at < now()") == 0
    assert await db.fetchval("SELECT count(*) FROM post_requests") == 2


async def test_without_a_request_id_no_statement_is_added(
    posts: PostStub, db: asyncpg.Connection, counter: StatementCounter
) -> None:
    author = await make_user(db, "cost")

    def ours(sent: list[str]) -> list[str]:
        # Not asyncpg's own type introspection on a connection's first use.
        return [s for s in sent if "'jit'" not in s and "typeinfo_tree" not in s]

    sent = ours(await counter.count(lambda: posts.CreatePost(create(author))))
    assert len(sent) == 1 and "post_requests" not in sent[0], sent
    sent = ours(await counter.count(lambda: posts.BatchCreatePosts(batch(author, count=3))))
    assert len(sent) == 1 and "post_requests" not in sent[0], sent
    # With an id: the claim (with its cleanup), the insert, and the posts' ids remembered.
    with_id = ours(await counter.count(lambda: posts.CreatePost(create(author, str(uuid.uuid4())))))
    assert len(with_id) == 3, with_id


async def test_a_retry_after_the_server_was_killed_returns_the_committed_post(
    database_url: str, db: asyncpg.Connection
) -> None:
    """The answer lost with the process (kill -9 after COMMIT): the retry finds the post."""
    author = await make_user(db, "killed")
    request_id = str(uuid.uuid4())
    env = {"DATABASE_URL": database_url}
    first_server = ServerProcess(env).start()
    try:
        async with aio.insecure_channel(first_server.address) as channel:
            stub = post_service_pb2_grpc.PostServiceStub(channel)
            first = await stub.CreatePost(create(author, request_id))
        first_server.signal(signal.SIGKILL)
        first_server.wait()
    finally:
        first_server.stop()
    with ServerProcess(env) as second_server:
        async with aio.insecure_channel(second_server.address) as channel:
            stub = post_service_pb2_grpc.PostServiceStub(channel)
            again = await stub.CreatePost(create(author, request_id))
    assert again == first
    assert await post_count(db) == 1
