"""Many replicas of the service: two independent `python -m service` processes, on two ports,
against one database, with the same configuration (AUTH_TOKENS, PAGE_TOKEN_SECRET). A client
whose calls land on either one sees no difference: page tokens, etags and bearer tokens issued
or accepted by one are honoured by the other, since no process keeps state between calls.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest
from blog.v1 import (
    post_service_pb2,
    post_service_pb2_grpc,
    resources_pb2,
    user_service_pb2,
    user_service_pb2_grpc,
)
from google.protobuf import field_mask_pb2
from grpc import aio

from tests.support import ServerProcess, create_user, failure, plain, rich_error, unique
from tests.support.paging import every_page

if TYPE_CHECKING:
    from blog.v1.post_service_pb2_grpc import PostServiceAsyncStub as PostStub
    from blog.v1.user_service_pb2_grpc import UserServiceAsyncStub as UserStub

TOKENS = "token-one,token-two"
AUTH = (("authorization", "Bearer token-two"),)
SECRET = "shared-page-token-secret-for-every-replica"


@pytest.fixture(scope="module")
def replicas(database_url: str) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    env = {"DATABASE_URL": database_url, "AUTH_TOKENS": TOKENS, "PAGE_TOKEN_SECRET": SECRET}
    a = ServerProcess(env)
    b = ServerProcess(env)
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.stop()
        b.stop()


@pytest.fixture(scope="module")
async def channels(
    replicas: tuple[ServerProcess, ServerProcess],
) -> AsyncIterator[tuple[aio.Channel, aio.Channel]]:
    a, b = replicas
    async with aio.insecure_channel(a.address) as ca, aio.insecure_channel(b.address) as cb:
        yield ca, cb


async def author(users: UserStub) -> resources_pb2.User:
    return await create_user(users, unique("m"), metadata=AUTH)


async def test_the_processes_are_distinct(replicas: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = replicas
    assert a.port != b.port
    assert a.process is not None and b.process is not None
    assert a.process.pid != b.process.pid


async def test_one_bearer_token_works_on_both_and_a_wrong_one_on_neither(
    channels: tuple[aio.Channel, aio.Channel],
) -> None:
    for channel in channels:
        users = user_service_pb2_grpc.UserServiceStub(channel)
        listed = await users.ListUsers(user_service_pb2.ListUsersRequest(), metadata=AUTH)
        assert listed is not None
        for metadata in ((("authorization", "Bearer nope"),), ()):
            with pytest.raises(grpc.RpcError) as caught:
                await users.ListUsers(user_service_pb2.ListUsersRequest(), metadata=metadata)
            assert rich_error(caught.value).code == grpc.StatusCode.UNAUTHENTICATED


async def test_paginated_walk_alternating_between_processes_sees_each_row_once(
    channels: tuple[aio.Channel, aio.Channel],
) -> None:
    a, b = (post_service_pb2_grpc.PostServiceStub(ch) for ch in channels)
    writer = await author(user_service_pb2_grpc.UserServiceStub(channels[0]))
    created = []
    for i in range(11):
        created.append(
            await (a if i % 2 else b).CreatePost(
                post_service_pb2.CreatePostRequest(author_id=writer.id, title=f"t{i}", content="c"),
                metadata=AUTH,
            )
        )
    pages = await every_page(
        lambda number, token: (a, b)[number % 2].ListPosts(
            post_service_pb2.ListPostsRequest(author_id=writer.id, page_size=3, page_token=token),
            metadata=AUTH,
        ),
        most=50,
    )
    seen = [p.id for page in pages for p in page.posts]
    assert len(seen) == len(set(seen)) == 11
    assert seen == [p.id for p in reversed(created)]  # newest first, as from one process
    # A token from one process, reused with other filters on the other: refused by both rules.
    first = await a.ListPosts(
        post_service_pb2.ListPostsRequest(author_id=writer.id, page_size=3), metadata=AUTH
    )
    with pytest.raises(grpc.RpcError) as caught:
        await b.ListPosts(
            post_service_pb2.ListPostsRequest(
                author_id=writer.id, published=True, page_size=3, page_token=first.next_page_token
            ),
            metadata=AUTH,
        )
    assert rich_error(caught.value).code == grpc.StatusCode.INVALID_ARGUMENT
    print(f"\nwalked {len(seen)} posts in {pages} pages alternating A/B: each exactly once")


async def test_etags_from_one_process_are_honoured_by_the_other(
    channels: tuple[aio.Channel, aio.Channel], database_url: str
) -> None:
    ua, ub = (user_service_pb2_grpc.UserServiceStub(ch) for ch in channels)
    pa, pb = (post_service_pb2_grpc.PostServiceStub(ch) for ch in channels)
    writer = await author(ua)
    post = await pa.CreatePost(
        post_service_pb2.CreatePostRequest(author_id=writer.id, title="v0", content="c"),
        metadata=AUTH,
    )
    mask = field_mask_pb2.FieldMask(paths=["title"])

    async def retitle(stub: PostStub, etag: str, title: str) -> resources_pb2.Post:
        return await stub.UpdatePost(
            post_service_pb2.UpdatePostRequest(
                post=resources_pb2.Post(id=post.id, title=title, etag=etag), update_mask=mask
            ),
            metadata=AUTH,
        )

    v1 = await retitle(pb, post.etag, "v1")  # etag issued by A, accepted by B
    assert await pa.GetPost(post_service_pb2.GetPostRequest(id=post.id), metadata=AUTH) == v1
    v2 = await retitle(pa, v1.etag, "v2")  # etag issued by B, accepted by A
    for stub in (pa, pb):  # the etag both have made stale is refused by both
        error = await failure(retitle(stub, v1.etag, "lost update"))
        assert (error.code, error.reason) == (grpc.StatusCode.ABORTED, "STALE_ETAG")

    user_etag = (
        await ub.GetUser(user_service_pb2.GetUserRequest(id=writer.id), metadata=AUTH)
    ).etag
    assert user_etag == writer.etag  # the same row reads the same etag on either process
    renamed = await ua.UpdateUser(
        user_service_pb2.UpdateUserRequest(
            user=resources_pb2.User(id=writer.id, username=unique("mr"), etag=user_etag),
            update_mask=field_mask_pb2.FieldMask(paths=["username"]),
        ),
        metadata=AUTH,
    )
    for user_stub in (ua, ub):
        with pytest.raises(grpc.RpcError) as caught:
            await user_stub.UpdateUser(
                user_service_pb2.UpdateUserRequest(
                    user=resources_pb2.User(id=writer.id, is_active=False, etag=user_etag),
                    update_mask=field_mask_pb2.FieldMask(paths=["is_active"]),
                ),
                metadata=AUTH,
            )
        assert rich_error(caught.value).code == grpc.StatusCode.ABORTED

    connection = await asyncpg.connect(plain(database_url))
    try:
        row = await connection.fetchrow("SELECT title FROM posts WHERE id=$1", post.id)
        username = await connection.fetchval("SELECT username FROM users WHERE id=$1", writer.id)
    finally:
        await connection.close()
    assert row["title"] == v2.title == "v2"
    assert username == renamed.username
    print("\netags: A->B accepted, B->A accepted, stale etag ABORTED on both (posts and users)")
