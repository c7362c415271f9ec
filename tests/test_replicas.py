"""Read replicas: DATABASE_REPLICA_URL sends NO_SIDE_EFFECTS calls to a real streaming replica.

The test starts its own primary (embedded PostgreSQL), migrates it, and builds a streaming
standby of it with pg_basebackup -R. The service runs with DATABASE_URL=primary and
DATABASE_REPLICA_URL=replica.

Decided behaviour (see docs/deploying.md):
* replica down: reads fail fast with UNAVAILABLE (reason DATABASE_UNAVAILABLE); they never fall
  back to the primary, whose capacity was sized for writes. Writes keep working. Health reports
  NOT_SERVING while either database is unreachable, so a balancer prefers processes whose reads
  work; reads recover by themselves once the replica is back.
* replica lag: reads are eventually consistent. A read right after a write may return the old
  row (and its old etag, which an Update then refuses as stale); the write's own response
  always carries the new state.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
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
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devtools.embedded import EmbeddedPostgres
from service.db import migrate
from service.db.engine import APPLICATION_NAME
from service.server import Server
from tests.support import create_user, failure, plain, rich_error, started_server, unique
from tests.support.paging import every_page
from tests.support.postgres import ReplicaPostgres

if TYPE_CHECKING:
    from blog.v1.post_service_pb2_grpc import PostServiceAsyncStub as PostStub
    from blog.v1.user_service_pb2_grpc import UserServiceAsyncStub as UserStub

DATABASE = "blog"


@dataclass
class Cluster:
    primary: EmbeddedPostgres
    replica: EmbeddedPostgres

    @property
    def primary_url(self) -> str:
        return self.primary.url(DATABASE)

    @property
    def replica_url(self) -> str:
        return self.replica.url(DATABASE)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with (
        tempfile.TemporaryDirectory(prefix="blog-primary-") as p,
        tempfile.TemporaryDirectory(prefix="blog-replica-") as r,
    ):
        primary = EmbeddedPostgres(Path(p), fast=True)
        replica = ReplicaPostgres(Path(r), fast=True)
        primary.start()
        try:

            async def prepare() -> None:
                admin = await asyncpg.connect(plain(primary.url()))
                try:
                    await admin.execute(f"CREATE DATABASE {DATABASE}")
                finally:
                    await admin.close()
                db = await asyncpg.connect(plain(primary.url(DATABASE)))
                try:
                    await db.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                finally:
                    await db.close()

            asyncio.run(prepare())
            migrate.upgrade(primary.url(DATABASE))
            replica.init_replica_of(primary)
            replica.start()
            yield Cluster(primary, replica)
        finally:
            replica.stop("immediate")
            primary.stop("immediate")


@pytest.fixture(scope="module")
async def primary_db(cluster: Cluster) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(plain(cluster.primary_url))
    yield connection
    await connection.close()


async def on_replica(cluster: Cluster, sql: str, *args: object) -> object:
    connection = await asyncpg.connect(plain(cluster.replica_url))
    try:
        return await connection.fetchval(sql, *args)
    finally:
        await connection.close()


async def caught_up(cluster: Cluster, primary_db: asyncpg.Connection) -> None:
    """Waits until the replica has replayed everything the primary has written so far."""
    timeout = 10.0
    lsn = await primary_db.fetchval("SELECT pg_current_wal_insert_lsn()")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await on_replica(cluster, "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", lsn):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"replica did not replay up to {lsn} within {timeout}s")


@pytest.fixture
async def service(cluster: Cluster) -> AsyncIterator[Server]:
    """The service reading from the replica: a fresh one per test."""
    instance = await started_server(cluster.primary_url, DATABASE_REPLICA_URL=cluster.replica_url)
    yield instance
    await instance.stop()


@pytest.fixture
async def channel(service: Server) -> AsyncIterator[aio.Channel]:
    async with aio.insecure_channel(f"127.0.0.1:{service.port}") as ch:
        yield ch


def stubs(channel: aio.Channel) -> tuple[UserStub, PostStub]:
    return (
        user_service_pb2_grpc.UserServiceStub(channel),
        post_service_pb2_grpc.PostServiceStub(channel),
    )


async def health_of(address: str) -> int | None:
    """Overall health, asked without blocking the event loop the in-process server runs on."""
    async with aio.insecure_channel(address) as ch:
        try:
            reply = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=1
            )
            return int(reply.status)
        except grpc.RpcError:
            return None


async def statement_calls(connection: asyncpg.Connection, pattern: str) -> int:
    """How many times statements matching `pattern` ran on that server (pg_stat_statements)."""
    calls = await connection.fetchval(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query ILIKE $1", pattern
    )
    return int(calls)


async def test_reads_are_served_by_the_replica_and_writes_by_the_primary(
    cluster: Cluster, primary_db: asyncpg.Connection, channel: aio.Channel
) -> None:
    users, _ = stubs(channel)
    user = await create_user(users, unique("r"))
    await caught_up(cluster, primary_db)
    replica = await asyncpg.connect(plain(cluster.replica_url))
    try:
        assert await replica.fetchval("SELECT pg_is_in_recovery()")
        await replica.execute("SELECT pg_stat_statements_reset()")
        await primary_db.execute("SELECT pg_stat_statements_reset()")

        for _ in range(5):
            got = await users.GetUser(user_service_pb2.GetUserRequest(id=user.id))
            assert got.email == user.email
        renamed = resources_pb2.User(id=user.id, username=unique("w"), etag=user.etag)
        await users.UpdateUser(
            user_service_pb2.UpdateUserRequest(
                user=renamed, update_mask=field_mask_pb2.FieldMask(paths=["username"])
            )
        )

        reads_on_replica = await statement_calls(replica, "SELECT%FROM users%WHERE%")
        reads_on_primary = await statement_calls(primary_db, "SELECT%FROM users%WHERE%")
        updates_on_primary = await statement_calls(primary_db, "UPDATE users%")
        updates_on_replica = await statement_calls(replica, "UPDATE users%")
        sessions = (
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
            " AND datname = current_database()"
        )
        replica_sessions = await replica.fetchval(sessions, APPLICATION_NAME)
        primary_sessions = await primary_db.fetchval(sessions, APPLICATION_NAME)
    finally:
        await replica.close()
    print(
        f"\nreplica: {reads_on_replica} user reads, {updates_on_replica} updates,"
        f" {replica_sessions} blog-service sessions; primary: {reads_on_primary} user reads,"
        f" {updates_on_primary} updates,"
        f" {primary_sessions} blog-service sessions"
    )
    assert reads_on_replica >= 5 and reads_on_primary < 5  # GetUser x5 never hit the primary
    assert updates_on_replica == 0 and updates_on_primary >= 1
    assert replica_sessions >= 1 and primary_sessions >= 1
    # The rename is on the primary, and reaches the replica by replication only.
    assert await primary_db.fetchval("SELECT username FROM users WHERE id=$1", user.id) == (
        renamed.username
    )


async def test_page_tokens_are_valid_across_replica_and_primary(
    cluster: Cluster, primary_db: asyncpg.Connection, channel: aio.Channel
) -> None:
    """A token issued by a read on the replica works on a server reading from the primary,
    and the other way round: the walk sees every row exactly once."""
    users, posts = stubs(channel)
    author = await create_user(users, unique("r"))
    created = await posts.BatchCreatePosts(
        post_service_pb2.BatchCreatePostsRequest(
            requests=[
                post_service_pb2.CreatePostRequest(author_id=author.id, title=f"p{i}", content="c")
                for i in range(7)
            ]
        )
    )
    await caught_up(cluster, primary_db)
    primary_only = await started_server(cluster.primary_url)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{primary_only.port}") as other:
            walkers = [posts, post_service_pb2_grpc.PostServiceStub(other)]
            pages = await every_page(
                lambda number, token: walkers[number % 2].ListPosts(
                    post_service_pb2.ListPostsRequest(
                        author_id=author.id, page_size=2, page_token=token
                    )
                ),
                most=100,
            )
            seen = [p.id for page in pages for p in page.posts]
    finally:
        await primary_only.stop()
    assert sorted(seen) == sorted(p.id for p in created.posts)
    assert len(seen) == len(set(seen)) == 7
    print(f"\nwalked {len(seen)} posts in {len(pages)} pages, alternating replica/primary")


async def test_replica_lag_a_read_after_a_write_may_return_the_old_row(
    cluster: Cluster, primary_db: asyncpg.Connection, channel: aio.Channel
) -> None:
    """Reads are eventually consistent: with replay paused, a read returns the row as it was,
    its old etag is refused by an Update, and after replay resumes the read sees the write."""
    users, _ = stubs(channel)
    user = await create_user(users, unique("r"))
    await caught_up(cluster, primary_db)
    await on_replica(cluster, "SELECT pg_wal_replay_pause()")
    try:
        renamed = await users.UpdateUser(
            user_service_pb2.UpdateUserRequest(
                user=resources_pb2.User(id=user.id, username=unique("lag"), etag=user.etag),
                update_mask=field_mask_pb2.FieldMask(paths=["username"]),
            )
        )
        assert renamed.username != user.username  # the write's own answer is current
        stale = await users.GetUser(user_service_pb2.GetUserRequest(id=user.id))
        assert (stale.username, stale.etag) == (user.username, user.etag)
        with pytest.raises(grpc.RpcError) as refused:
            await users.UpdateUser(
                user_service_pb2.UpdateUserRequest(
                    user=resources_pb2.User(id=user.id, is_active=False, etag=stale.etag),
                    update_mask=field_mask_pb2.FieldMask(paths=["is_active"]),
                )
            )
        assert rich_error(refused.value).code == grpc.StatusCode.ABORTED
    finally:
        await on_replica(cluster, "SELECT pg_wal_replay_resume()")
    began = time.monotonic()
    await caught_up(cluster, primary_db)
    fresh = await users.GetUser(user_service_pb2.GetUserRequest(id=user.id))
    assert (fresh.username, fresh.etag) == (renamed.username, renamed.etag)
    print(
        f"\nreplay paused: read returned username {stale.username!r} after the write made it"
        f" {renamed.username!r}; stale etag -> ABORTED; caught up"
        f" {time.monotonic() - began:.2f}s after resume"
    )


async def test_replica_down_reads_fail_unavailable_fast_writes_still_work(
    cluster: Cluster, primary_db: asyncpg.Connection, service: Server, channel: aio.Channel
) -> None:
    users, posts = stubs(channel)
    user = await create_user(users, unique("r"))
    await caught_up(cluster, primary_db)
    await users.GetUser(user_service_pb2.GetUserRequest(id=user.id))  # a pooled connection
    address = f"127.0.0.1:{service.port}"
    cluster.replica.stop("fast")
    try:
        outcomes = []
        for read in (
            users.GetUser(user_service_pb2.GetUserRequest(id=user.id), timeout=10),
            users.ListUsers(user_service_pb2.ListUsersRequest(), timeout=10),
            posts.ListPosts(post_service_pb2.ListPostsRequest(), timeout=10),
            users.GetUser(user_service_pb2.GetUserRequest(id=user.id), timeout=10),
        ):
            began = time.monotonic()
            error = await failure(read)
            outcomes.append((error.code.name, error.reason, round(time.monotonic() - began, 3)))
        assert all(code == "UNAVAILABLE" for code, _, _ in outcomes), outcomes
        assert all(reason == "DATABASE_UNAVAILABLE" for _, reason, _ in outcomes), outcomes
        assert all(seconds < 2.0 for _, _, seconds in outcomes), outcomes

        written = await create_user(users, unique("r"))  # writes go to the primary, which is up
        assert await primary_db.fetchval("SELECT count(*) FROM users WHERE id=$1", written.id)

        began = time.monotonic()
        while await health_of(address) != health_pb2.HealthCheckResponse.NOT_SERVING:
            assert time.monotonic() - began < 5, "health stayed SERVING with the replica down"
            await asyncio.sleep(0.1)
        not_serving_after = time.monotonic() - began
    finally:
        cluster.replica.start()
    began = time.monotonic()
    while True:
        try:
            await users.GetUser(user_service_pb2.GetUserRequest(id=written.id), timeout=2)
            break
        except grpc.RpcError as error:
            assert time.monotonic() - began < 10, f"reads did not recover: {error}"
            await asyncio.sleep(0.2)
    recovered_after = time.monotonic() - began
    print(
        f"\nreplica down: reads -> {outcomes}; writes OK; health NOT_SERVING after"
        f" {not_serving_after:.2f}s; reads back {recovered_after:.2f}s after the replica restarted"
    )
