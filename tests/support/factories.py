"""Rows a test starts from: written straight into the database, or created through the API."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

import asyncpg
from blog.v1 import post_service_pb2, resources_pb2, user_service_pb2

if TYPE_CHECKING:
    from blog.v1.post_service_pb2_grpc import PostServiceAsyncStub as PostStub
    from blog.v1.user_service_pb2_grpc import UserServiceAsyncStub as UserStub

PASSWORD = "correct horse battery"


def unique(prefix: str = "u") -> str:
    """A name no other test (or earlier run on the same database) has used."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


async def make_user(db: asyncpg.Connection, name: str = "alice", email: str | None = None) -> int:
    """A user row (no usable password: the hash is 'x'), inserted directly; its id."""
    user_id: int = await db.fetchval(
        "INSERT INTO users (email, username, hashed_password) VALUES ($1, $2, 'x') RETURNING id",
        email or f"{name}@example.com",
        name,
    )
    return user_id


async def create_user(
    users: UserStub,
    name: str = "alice",
    email: str | None = None,
    password: str = PASSWORD,
    is_superuser: bool = False,
    metadata: Sequence[tuple[str, str]] = (),
    display_name: str = "",
) -> resources_pb2.User:
    """A user created through CreateUser, as a client creates one."""
    return await users.CreateUser(
        user_service_pb2.CreateUserRequest(
            email=email or f"{name}@example.com",
            username=name,
            password=password,
            is_superuser=is_superuser,
            display_name=display_name,
        ),
        metadata=tuple(metadata),
    )


async def make_post(
    posts: PostStub,
    author_id: int,
    title: str = "Title",
    content: str = "Content",
    published: bool = False,
) -> resources_pb2.Post:
    """A post created through CreatePost."""
    return await posts.CreatePost(
        post_service_pb2.CreatePostRequest(
            author_id=author_id, title=title, content=content, published=published
        )
    )
