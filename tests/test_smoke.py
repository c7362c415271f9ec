from __future__ import annotations

import grpc
from blog.v1 import post_service_pb2, user_service_pb2

from tests.support import failure


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
    error = await failure(users.GetUser(user_service_pb2.GetUserRequest(id=999)))
    assert error.code == grpc.StatusCode.NOT_FOUND and error.reason == "USER_NOT_FOUND"
    assert "999" in error.message
