"""Every RPC through a real PgBouncer in transaction mode, under more concurrency than it has
server connections.

PgBouncer (pool_mode=transaction, default_pool_size=3) sits in front of the run's database;
the service (DATABASE_URL at PgBouncer) is driven by 32 concurrent clients, each running a
scenario that calls every RPC of both services: the RPCs the descriptors declare, checked
without PgBouncer too, so that a new RPC fails here until the scenario calls it. With
DB_PGBOUNCER=true there must be zero errors. With DB_PGBOUNCER=false the same mix is run again
to show the failure mode the setting prevents (asyncpg's named prepared statements landing on
another client's server connection).
"""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from collections.abc import Iterator
from typing import Any

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
from sqlalchemy.engine import make_url

from service.api import SERVICES
from service.db.engine import create_database
from service.server import Server
from tests.support import make_settings, pgbouncer, started_server
from tests.support.paging import every_page

CLIENTS = 32
ROUNDS = 3
BOUNCER_POOL = 3
# What the scenario must call, read from the protos: a name two services shared would be listed
# twice here and once in the scenario's counts, and fail until the scenario tells them apart.
DESCRIBED_RPCS = sorted(method.name for service in SERVICES for method in service.methods)


@pytest.fixture(scope="module")
def bouncer(database_url: str) -> Iterator[pgbouncer.PgBouncer]:
    if not pgbouncer.available():
        pytest.skip("pgbouncer is not installed")
    url = make_url(database_url)
    with pgbouncer.PgBouncer(url.host or "127.0.0.1", url.port or 5432, pool_size=3) as b:
        yield b


def through(bouncer: pgbouncer.PgBouncer, database_url: str) -> str:
    return bouncer.url(make_url(database_url).database or "postgres")


class Mix:
    """One client's scenario touching every RPC; failures are collected, not raised."""

    def __init__(self, channel: aio.Channel) -> None:
        self.users = user_service_pb2_grpc.UserServiceStub(channel)
        self.posts = post_service_pb2_grpc.PostServiceStub(channel)
        self.errors: list[str] = []
        self.calls: collections.Counter[str] = collections.Counter()

    async def call(self, name: str, awaitable: Any) -> Any:
        self.calls[name] += 1
        try:
            return await awaitable
        except grpc.RpcError as error:
            self.errors.append(f"{name}: {error.code().name}: {error.details()}")
            raise

    async def run(self, tag: str) -> None:
        try:
            await self._scenario(tag)
        except grpc.RpcError:
            pass  # recorded by call()
        except AssertionError as error:
            self.errors.append(f"wrong answer: {error}")

    async def _scenario(self, tag: str) -> None:
        users, posts, call = self.users, self.posts, self.call
        name = f"pgb_{tag}"
        user = await call(
            "CreateUser",
            users.CreateUser(
                user_service_pb2.CreateUserRequest(
                    email=f"{name}@example.com", username=name, password="password-1"
                )
            ),
        )
        basic = await call(
            "GetUser",
            users.GetUser(
                user_service_pb2.GetUserRequest(id=user.id, view=resources_pb2.USER_VIEW_BASIC)
            ),
        )
        assert basic.email == user.email
        by_email = await call(
            "GetUserByEmail",
            users.GetUserByEmail(
                user_service_pb2.GetUserByEmailRequest(email=f"{name}@EXAMPLE.com")
            ),
        )
        assert by_email.id == user.id
        await call(
            "AuthenticateUser",
            users.AuthenticateUser(
                user_service_pb2.AuthenticateUserRequest(login=name, password="password-1")
            ),
        )
        renamed = resources_pb2.User(id=user.id, username=f"{name}_r", etag=user.etag)
        user = await call(
            "UpdateUser",
            users.UpdateUser(
                user_service_pb2.UpdateUserRequest(
                    user=renamed, update_mask=field_mask_pb2.FieldMask(paths=["username"])
                )
            ),
        )
        await call(
            "ChangePassword",
            users.ChangePassword(
                user_service_pb2.ChangePasswordRequest(id=user.id, new_password="password-2")
            ),
        )
        await call(
            "AuthenticateUser",
            users.AuthenticateUser(
                user_service_pb2.AuthenticateUserRequest(
                    login=f"{name}@example.com", password="password-2"
                )
            ),
        )
        post = await call(
            "CreatePost",
            posts.CreatePost(
                post_service_pb2.CreatePostRequest(
                    author_id=user.id, title=f"first {tag}", content="c", published=True
                )
            ),
        )
        got = await call("GetPost", posts.GetPost(post_service_pb2.GetPostRequest(id=post.id)))
        assert got.etag == post.etag
        post = await call(
            "UpdatePost",
            posts.UpdatePost(
                post_service_pb2.UpdatePostRequest(
                    post=resources_pb2.Post(id=post.id, title=f"edited {tag}", etag=post.etag),
                    update_mask=field_mask_pb2.FieldMask(paths=["title"]),
                )
            ),
        )
        batch = await call(
            "BatchCreatePosts",
            posts.BatchCreatePosts(
                post_service_pb2.BatchCreatePostsRequest(
                    requests=[
                        post_service_pb2.CreatePostRequest(
                            author_id=user.id, title=f"batch {i}", content="c"
                        )
                        for i in range(3)
                    ]
                )
            ),
        )
        assert len(batch.posts) == 3
        pages = await every_page(
            lambda _, token: call(
                "ListPosts",
                posts.ListPosts(
                    post_service_pb2.ListPostsRequest(
                        author_id=user.id, page_size=2, page_token=token
                    )
                ),
            )
        )
        seen = [p.id for page in pages for p in page.posts]
        assert len(seen) == len(set(seen)) == 4, seen
        found = await call(
            "ListPosts",
            posts.ListPosts(post_service_pb2.ListPostsRequest(query=f"EDITED {tag}")),
        )
        assert [p.id for p in found.posts] == [post.id]
        with_posts = await call(
            "GetUser",
            users.GetUser(
                user_service_pb2.GetUserRequest(id=user.id, view=resources_pb2.USER_VIEW_WITH_POSTS)
            ),
        )
        assert len(with_posts.posts) == 4
        self.calls["StreamPosts"] += 1
        streamed = []
        try:
            async for p in posts.StreamPosts(
                post_service_pb2.StreamPostsRequest(author_id=user.id)
            ):
                streamed.append(p.id)
        except grpc.RpcError as error:
            self.errors.append(f"StreamPosts: {error.code().name}: {error.details()}")
            raise
        assert sorted(streamed) == sorted(seen)
        pages = await every_page(
            lambda _, token: call(
                "ListUsers",
                users.ListUsers(
                    user_service_pb2.ListUsersRequest(query=name, page_size=1, page_token=token)
                ),
            )
        )
        listed = [u.id for page in pages for u in page.users]
        assert listed == [user.id]
        await call("DeletePost", posts.DeletePost(post_service_pb2.DeletePostRequest(id=post.id)))
        await call("DeleteUser", users.DeleteUser(user_service_pb2.DeleteUserRequest(id=user.id)))


async def test_the_scenario_calls_exactly_the_rpcs_the_descriptors_declare(
    channel: aio.Channel,
) -> None:
    """On the run's own server, no PgBouncer needed: the scenario is written by hand, so this is
    what fails when the protos gain an RPC it does not call (or lose one it does)."""
    mix = Mix(channel)
    await mix.run(uuid.uuid4().hex[:6])
    assert mix.errors == []
    assert sorted(mix.calls) == DESCRIBED_RPCS


async def run_mix(address: str) -> tuple[list[str], collections.Counter[str], float]:
    """CLIENTS concurrent scenarios, ROUNDS times; each client has its own channel."""
    errors: list[str] = []
    calls: collections.Counter[str] = collections.Counter()
    began = time.monotonic()
    channels = [aio.insecure_channel(address) for _ in range(CLIENTS)]
    try:
        for round_ in range(ROUNDS):
            mixes = [Mix(ch) for ch in channels]
            run = uuid.uuid4().hex[:6]
            await asyncio.gather(*(m.run(f"{run}_{round_}_{i}z") for i, m in enumerate(mixes)))
            for m in mixes:
                errors += m.errors
                calls += m.calls
    finally:
        for ch in channels:
            await ch.close(None)
    return errors, calls, time.monotonic() - began


async def serve(url: str, **overrides: object) -> Server:
    # Each engine may open 4 + 4 connections: together more than PgBouncer's 3 server
    # connections, and 32 clients queue for them. This is about PgBouncer, not capacity: any
    # of the 32 may stream or hash a password at once without being refused.
    limits = {"MAX_STREAMS": 32, "PASSWORD_HASH_QUEUE": 32}
    return await started_server(url, DB_POOL_SIZE=4, DB_MAX_OVERFLOW=4, **limits, **overrides)


async def test_every_rpc_through_pgbouncer_transaction_mode_has_zero_errors(
    bouncer: pgbouncer.PgBouncer, database_url: str
) -> None:
    server = await serve(through(bouncer, database_url), DB_PGBOUNCER=True)
    try:
        errors, calls, seconds = await run_mix(f"127.0.0.1:{server.port}")
    finally:
        await server.stop()
    print(
        f"\nDB_PGBOUNCER=true through PgBouncer (transaction mode, {BOUNCER_POOL} server conns,"
        f" {CLIENTS} clients x {ROUNDS} rounds): {sum(calls.values())} calls in {seconds:.1f}s,"
        f" {len(errors)} errors; per RPC: {dict(sorted(calls.items()))}"
    )
    assert sorted(calls) == DESCRIBED_RPCS
    assert errors == [], errors[:5]
    log = bouncer.log()
    assert "prepared statement" not in log, log[-2000:]


async def test_without_db_pgbouncer_the_same_mix_breaks(
    bouncer: pgbouncer.PgBouncer, database_url: str
) -> None:
    """The failure modes DB_PGBOUNCER=true prevents, reproduced through the same PgBouncer:
    neither pool can connect while it sends a startup parameter PgBouncer does not track
    (default_transaction_read_only for reads, statement_timeout for writes: UNAVAILABLE), and
    named prepared statements would land on server connections other clients prepared them
    on (INTERNAL, "prepared statement ... already exists / does not exist")."""
    try:
        server = await serve(through(bouncer, database_url), DB_PGBOUNCER=False)
    except Exception as error:
        print(f"\nDB_PGBOUNCER=false: the server did not even start: {error!r}")
        return
    try:
        errors, calls, seconds = await run_mix(f"127.0.0.1:{server.port}")
    finally:
        await server.stop()
    kinds = collections.Counter(":".join(e.split(":")[:3])[:140] for e in errors)
    print(
        f"\nDB_PGBOUNCER=false through the same PgBouncer: {sum(calls.values())} calls in"
        f" {seconds:.1f}s, {len(errors)} errors: {dict(kinds.most_common(6))}"
    )
    assert errors, "expected the unsafe driver settings to fail through PgBouncer"
    assert all(": UNAVAILABLE:" in e or ": INTERNAL:" in e for e in errors), kinds


async def test_reads_through_pgbouncer_still_run_read_only(
    bouncer: pgbouncer.PgBouncer, database_url: str
) -> None:
    """PgBouncer refuses the default_transaction_read_only startup parameter, so with
    DB_PGBOUNCER=true the read pool opens BEGIN READ ONLY transactions instead."""
    database = create_database(make_settings(through(bouncer, database_url), DB_PGBOUNCER=True))
    try:
        modes = []
        for read_only in (True, False):
            session = database.session(read_only=read_only)
            connection = await session.connection()
            modes.append(await connection.fetchval("SHOW transaction_read_only"))
            await session.end(None)
        mode, writer_mode = modes
    finally:
        await database.dispose()
    assert (mode, writer_mode) == ("on", "off")
