"""Error details stay under gRPC's 8 KiB metadata limit, however many fields are bad.

Past the limit a C-core client (grpcio, sync or aio, like these) reads the call as
RESOURCE_EXHAUSTED instead of the error: the client could not tell what was wrong.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import pytest
from blog.v1 import post_service_pb2, post_service_pb2_grpc, resources_pb2
from google.protobuf import field_mask_pb2

from service.server import Server
from tests.support import make_user, rich_error

if TYPE_CHECKING:
    from blog.v1.post_service_pb2_grpc import PostServiceAsyncStub as PostStub

pytestmark = pytest.mark.usefixtures("db_pool")


async def test_batch_of_1000_bad_items_is_invalid_argument_naming_at_most_100(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    """1000 items with a blank title and no content: 2000 violations."""
    author_id = await make_user(db, "author")
    requests = [
        post_service_pb2.CreatePostRequest(author_id=author_id, title=" ", content="")
        for _ in range(1000)
    ]

    with pytest.raises(grpc.RpcError) as caught:
        await posts.BatchCreatePosts(post_service_pb2.BatchCreatePostsRequest(requests=requests))

    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
    assert error.reason == "INVALID_ARGUMENT"
    assert 1 <= len(error.violations) <= 100
    assert "requests[0].title" in error.violations  # the first ones, in request order
    assert "2000" in error.message, error.message
    assert await db.fetchval("SELECT count(*) FROM posts") == 0


async def test_10000_bogus_mask_paths_are_invalid_argument_naming_at_most_100(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    """Long non-ASCII paths, quoted back in each description and in the message."""
    post_id: int = await db.fetchval(
        "INSERT INTO posts (author_id, title, content) VALUES ($1, 't', 'c') RETURNING id",
        await make_user(db, "author"),
    )
    paths = [f"{i}-{'ü' * 150}" for i in range(10_000)]

    with pytest.raises(grpc.RpcError) as caught:
        await posts.UpdatePost(
            post_service_pb2.UpdatePostRequest(
                post=resources_pb2.Post(id=post_id, title="new"),
                update_mask=field_mask_pb2.FieldMask(paths=paths),
            )
        )

    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
    assert 1 <= len(error.violations) <= 100
    assert "update_mask.paths[0]" in error.violations
    trailers: Any = caught.value.trailing_metadata()
    assert sum(len(key) + len(value) for key, value in trailers) < 8192
    assert "10000" in error.message, error.message
    assert await db.fetchval("SELECT title FROM posts WHERE id = $1", post_id) == "t"


async def test_a_sync_grpcio_client_reads_the_same_invalid_argument(server: Server) -> None:
    """The plain (sync) grpcio client, as most Python services call us (in a thread: the
    server runs on this test's event loop)."""

    def call() -> grpc.RpcError:
        requests = [post_service_pb2.CreatePostRequest(author_id=1, title="") for _ in range(1000)]
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = post_service_pb2_grpc.PostServiceStub(channel)
            try:
                stub.BatchCreatePosts(
                    post_service_pb2.BatchCreatePostsRequest(requests=requests), timeout=30
                )
            except grpc.RpcError as error:
                return error
        raise AssertionError("the batch was accepted")

    error = rich_error(await asyncio.to_thread(call))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
    assert 1 <= len(error.violations) <= 100
    assert "2000" in error.message
