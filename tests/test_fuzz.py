"""Property tests: generated requests (huge, empty, unicode and NUL-laden strings; negative, zero,
huge ids; random masks and page tokens) to every RPC of a real `python -m service`.

Whatever comes in, no call ends INTERNAL or UNKNOWN, the server keeps running, and a call that
fails leaves the database exactly as it was. Oversized messages are RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Iterator
from typing import Any

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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import plain
from tests.support import ServerProcess

INT64 = st.one_of(
    st.sampled_from([0, -1, 1, 2, 3, 2**63 - 1, -(2**63), 2**31, -(2**31)]),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=100, max_size=1200),
    st.sampled_from(["", " ", "\x00", "a\x00b", "é" * 300, "😀" * 101, "%_\\", "x" * 256]),
    st.builds(lambda n, c: c * n, st.integers(0, 120_000), st.sampled_from(["a", "\x00", "ü"])),
)
EMAILS = st.one_of(
    TEXT, st.builds(lambda a, b: f"{a}@{b}.com", st.text(max_size=20), st.text(max_size=20))
)
TOKENS = st.one_of(
    TEXT,
    st.binary(max_size=200).map(lambda b: base64.urlsafe_b64encode(b).decode()),
    st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode().rstrip("=")),
)
PATHS = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "email",
                "username",
                "is_active",
                "is_superuser",
                "*",
                "title",
                "content",
                "published",
                "id",
                "etag",
                "created_at",
                "password",
                "author_id",
                "posts",
                "",
            ]
        ),
        st.text(max_size=30),
    ),
    max_size=6,
)
MASK = st.one_of(st.none(), PATHS.map(lambda p: field_mask_pb2.FieldMask(paths=p)))
OPT_BOOL = st.one_of(st.none(), st.booleans())
PAGE_SIZE = st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([0, -1, 1, 1000, 1001]))
FUZZ = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


class World:
    """A running service, its stubs, and a way to look at the database."""

    def __init__(self, process: ServerProcess, database_url: str) -> None:
        self.process = process
        self.url = plain(database_url)
        self.channel = grpc.insecure_channel(
            process.address, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
        )
        self.users = user_service_pb2_grpc.UserServiceStub(self.channel)
        self.posts = post_service_pb2_grpc.PostServiceStub(self.channel)
        self.user_ids: list[int] = []
        self.post_ids: list[int] = []

    def snapshot(self) -> tuple[Any, ...]:
        async def read() -> tuple[Any, ...]:
            connection = await asyncpg.connect(self.url)
            try:
                row = await connection.fetchrow(
                    "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM posts),"
                    " (SELECT md5(coalesce(string_agg(u::text, ',' ORDER BY id), ''))"
                    "  FROM users u),"
                    " (SELECT md5(coalesce(string_agg(p::text, ',' ORDER BY id), ''))"
                    "  FROM posts p)"
                )
                return tuple(row)
            finally:
                await connection.close()

        return asyncio.run(read())

    def check(self, call: Callable[[], Any]) -> grpc.StatusCode:
        """Runs one call; asserts the invariants; returns its code."""
        before = self.snapshot()
        code = grpc.StatusCode.OK
        try:
            result = call()
            if hasattr(result, "__iter__") and not hasattr(result, "ListFields"):
                list(result)
        except grpc.RpcError as error:
            code = error.code()
        assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), code
        assert self.process.process is not None and self.process.process.poll() is None
        if code != grpc.StatusCode.OK:
            assert self.snapshot() == before, f"a call that failed {code} changed the database"
        return code


@pytest.fixture(scope="module")
def world(database_url: str) -> Iterator[World]:
    process = ServerProcess({"DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"})
    with process:
        w = World(process, database_url)
        for i in range(3):
            user = w.users.CreateUser(
                user_service_pb2.CreateUserRequest(
                    email=f"fuzz{i}@example.com", username=f"fuzz{i}", password="password-123"
                ),
                timeout=10,
            )
            w.user_ids.append(user.id)
            post = w.posts.CreatePost(
                post_service_pb2.CreatePostRequest(author_id=user.id, title="t", content="c"),
                timeout=10,
            )
            w.post_ids.append(post.id)
        try:
            yield w
        finally:
            w.channel.close()


@pytest.fixture(autouse=True)
def _clean_start(world: World) -> None:
    """Tests share the world; truncation by conftest would remove the seeded rows."""


def ids(world: World) -> st.SearchStrategy[int]:
    return st.one_of(INT64, st.sampled_from(world.user_ids + world.post_ids))


T = 10  # seconds per call; a hang fails as DEADLINE_EXCEEDED is allowed, so keep it generous


@FUZZ
@given(data=st.data())
def test_fuzz_user_reads(world: World, data: st.DataObject) -> None:
    u = world.users
    id_ = data.draw(ids(world))
    view = data.draw(st.integers(-5, 5))
    world.check(lambda: u.GetUser(user_service_pb2.GetUserRequest(id=id_, view=view), timeout=T))  # type: ignore[arg-type]
    email = data.draw(EMAILS)
    world.check(
        lambda: u.GetUserByEmail(user_service_pb2.GetUserByEmailRequest(email=email), timeout=T)
    )
    request = user_service_pb2.ListUsersRequest(
        page_size=data.draw(PAGE_SIZE), page_token=data.draw(TOKENS), query=data.draw(TEXT)
    )
    active = data.draw(OPT_BOOL)
    if active is not None:
        request.is_active = active
    world.check(lambda: u.ListUsers(request, timeout=T))


@FUZZ
@given(data=st.data())
def test_fuzz_user_writes(world: World, data: st.DataObject) -> None:
    u = world.users
    create = user_service_pb2.CreateUserRequest(
        email=data.draw(EMAILS),
        username=data.draw(TEXT),
        password=data.draw(TEXT),
        is_superuser=data.draw(st.booleans()),
    )
    world.check(lambda: u.CreateUser(create, timeout=T))
    user = resources_pb2.User(
        id=data.draw(ids(world)),
        email=data.draw(EMAILS),
        username=data.draw(TEXT),
        is_active=data.draw(st.booleans()),
        is_superuser=data.draw(st.booleans()),
        etag=data.draw(TOKENS),
    )
    update = user_service_pb2.UpdateUserRequest(user=user)
    mask = data.draw(MASK)
    if mask is not None:
        update.update_mask.CopyFrom(mask)
    world.check(lambda: u.UpdateUser(update, timeout=T))
    change = user_service_pb2.ChangePasswordRequest(
        id=data.draw(ids(world)), new_password=data.draw(TEXT)
    )
    world.check(lambda: u.ChangePassword(change, timeout=T))
    login = user_service_pb2.AuthenticateUserRequest(
        login=data.draw(EMAILS), password=data.draw(TEXT)
    )
    world.check(lambda: u.AuthenticateUser(login, timeout=T))
    # Deleting only ids that are not the seeded ones keeps the world useful for later examples.
    victim = data.draw(INT64.filter(lambda i: i not in world.user_ids))
    world.check(lambda: u.DeleteUser(user_service_pb2.DeleteUserRequest(id=victim), timeout=T))


@FUZZ
@given(data=st.data())
def test_fuzz_post_reads(world: World, data: st.DataObject) -> None:
    p = world.posts
    id_ = data.draw(ids(world))
    world.check(lambda: p.GetPost(post_service_pb2.GetPostRequest(id=id_), timeout=T))
    request = post_service_pb2.ListPostsRequest(
        page_size=data.draw(PAGE_SIZE), page_token=data.draw(TOKENS), query=data.draw(TEXT)
    )
    author = data.draw(st.one_of(st.none(), ids(world)))
    if author is not None:
        request.author_id = author
    published = data.draw(OPT_BOOL)
    if published is not None:
        request.published = published
    world.check(lambda: p.ListPosts(request, timeout=T))
    stream = post_service_pb2.StreamPostsRequest()
    if author is not None:
        stream.author_id = author
    if published is not None:
        stream.published = published
    world.check(lambda: p.StreamPosts(stream, timeout=T))


def _create_post(world: World, data: st.DataObject) -> post_service_pb2.CreatePostRequest:
    return post_service_pb2.CreatePostRequest(
        author_id=data.draw(ids(world)),
        title=data.draw(TEXT),
        content=data.draw(TEXT),
        published=data.draw(st.booleans()),
    )


@FUZZ
@given(data=st.data())
def test_fuzz_post_writes(world: World, data: st.DataObject) -> None:
    p = world.posts
    create = _create_post(world, data)
    world.check(lambda: p.CreatePost(create, timeout=T))
    post = resources_pb2.Post(
        id=data.draw(ids(world)),
        author_id=data.draw(INT64),
        title=data.draw(TEXT),
        content=data.draw(TEXT),
        published=data.draw(st.booleans()),
        etag=data.draw(TOKENS),
    )
    update = post_service_pb2.UpdatePostRequest(post=post)
    mask = data.draw(MASK)
    if mask is not None:
        update.update_mask.CopyFrom(mask)
    world.check(lambda: p.UpdatePost(update, timeout=T))
    count = data.draw(st.sampled_from([0, 1, 2, 5, 1001]))
    batch = post_service_pb2.BatchCreatePostsRequest(
        requests=[_create_post(world, data) for _ in range(min(count, 5))]
        + [create] * max(0, count - 5)
    )
    world.check(lambda: p.BatchCreatePosts(batch, timeout=T))
    victim = data.draw(INT64.filter(lambda i: i not in world.post_ids))
    world.check(lambda: p.DeletePost(post_service_pb2.DeletePostRequest(id=victim), timeout=T))


def test_messages_above_the_maximum_are_resource_exhausted(world: World) -> None:
    """GRPC_MAX_MESSAGE_BYTES defaults to 4 MiB: a 5 MiB request is refused whole."""
    huge = "x" * (5 * 1024 * 1024)
    author = world.user_ids[0]
    for call in (
        lambda: world.posts.CreatePost(
            post_service_pb2.CreatePostRequest(author_id=author, title="t", content=huge),
            timeout=T,
        ),
        lambda: world.users.GetUserByEmail(
            user_service_pb2.GetUserByEmailRequest(email=huge), timeout=T
        ),
        lambda: world.posts.BatchCreatePosts(
            post_service_pb2.BatchCreatePostsRequest(
                requests=[
                    post_service_pb2.CreatePostRequest(
                        author_id=author, title="t", content="y" * 90_000
                    )
                ]
                * 60
            ),
            timeout=T,
        ),
    ):
        assert world.check(call) == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Just under the limit is fine for the transport (the content rule then says no).
    assert (
        world.check(
            lambda: world.posts.CreatePost(
                post_service_pb2.CreatePostRequest(
                    author_id=author, title="t", content="x" * 4_000_000
                ),
                timeout=T,
            )
        )
        == grpc.StatusCode.INVALID_ARGUMENT
    )
