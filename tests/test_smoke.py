from __future__ import annotations

import grpc
import pytest
from blog.v1 import post_service_pb2, user_service_pb2

from tests.support import rich_error


async def test_create_and_get_user(users, posts, db) -> None:  # type: ignore[no-untyped-def]
    user = await users.CreateUser(
        user_service_pb2.CreateUserRequest(
            email="a@example.com", username="alice", password="secret-pass"
        )
    )
    assert user.id > 0 and user.is_active and user.etag
    post = await posts.CreatePost(
        post_service_pb2.CreatePostRequest(author_id=user.id, title="t", content="c")
    )
    assert post.author.username == "alice"
    assert await db.fetchval("SELECT count(*) FROM posts") == 1
    with pytest.raises(grpc.RpcError) as caught:
        await users.GetUser(user_service_pb2.GetUserRequest(id=999))
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.NOT_FOUND and error.reason == "USER_NOT_FOUND"
    assert "999" in error.message
