"""deploy/patroni for real: etcd, two Patroni-managed PostgreSQL 15 nodes (synchronous_mode) and
the service pointed at both with multi-host URLs. The primary is lost (SIGKILL of the whole
node) or handed over (`patronictl switchover`) under write load: writes fail UNAVAILABLE, never
INTERNAL, only until a standby is promoted, then succeed again in the same service process;
every write answered OK is on the new primary; reads through the replica URL keep working.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest
from blog.v1 import post_service_pb2, post_service_pb2_grpc
from grpc import aio

from service.db import migrate
from tests.support import ServerProcess, patroni, plain, run_sync

if TYPE_CHECKING:
    from blog.v1.post_service_pb2_grpc import PostServiceAsyncStub as PostStub

pytestmark = pytest.mark.timeout(240)
DATABASE = "blog"


@pytest.fixture(scope="module")
def cluster() -> Iterator[patroni.PatroniCluster]:
    missing = patroni.missing()
    if missing:
        pytest.skip(f"Patroni/etcd/PostgreSQL 15 not installed: {', '.join(missing)}")
    started = patroni.PatroniCluster()
    try:
        started.start()
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def seeded(cluster: patroni.PatroniCluster) -> tuple[int, int]:
    """The service's database on the cluster, migrated, with one author and one post."""
    primary = cluster.primary()
    assert primary is not None

    async def prepare() -> tuple[int, int]:
        admin = await asyncpg.connect(plain(cluster.node_url(primary, "postgres")))
        try:
            await admin.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            await admin.close()
        await asyncio.to_thread(migrate.upgrade, cluster.node_url(primary, DATABASE))
        db = await asyncpg.connect(plain(cluster.node_url(primary, DATABASE)))
        try:
            user_id: int = await db.fetchval(
                "INSERT INTO users (email, username, hashed_password)"
                " VALUES ('ha@example.com', 'ha', 'x') RETURNING id"
            )
            post_id: int = await db.fetchval(
                "INSERT INTO posts (author_id, title, content) VALUES ($1, 'seed', 'c')"
                " RETURNING id",
                user_id,
            )
            return user_id, post_id
        finally:
            await db.close()

    return run_sync(prepare())


@pytest.fixture
def service(cluster: patroni.PatroniCluster, seeded: tuple[int, int]) -> Iterator[ServerProcess]:
    """A service process per test, never restarted during it. A fresh one, because the reader
    pool picks a standby when it connects (prefer-standby) and stays there: after a switchover
    its connections sit on the new primary, and a later loss of that node fails those reads
    once (UNAVAILABLE) before they reconnect to the standby (docs/deploying.md)."""
    env = {
        "DATABASE_URL": cluster.url(database=DATABASE, target_session_attrs="primary"),
        # Not read-write: the reader pool sets default_transaction_read_only, which would make
        # every host fail a read-write check.
        "DATABASE_REPLICA_URL": cluster.url(
            database=DATABASE, target_session_attrs="prefer-standby"
        ),
        "DB_POOL_TIMEOUT": "2",
    }
    with ServerProcess(env) as process:
        yield process


@pytest.fixture
async def posts(service: ServerProcess) -> AsyncIterator[PostStub]:
    async with aio.insecure_channel(service.address) as channel:
        yield post_service_pb2_grpc.PostServiceStub(channel)


@dataclass
class Call:
    start: float
    end: float
    code: str
    title: str = ""


@dataclass
class Load:
    """Writers (CreatePost) and readers (GetPost, on the replica URL) against the service."""

    posts: PostStub
    author_id: int
    post_id: int
    writes: list[Call] = field(default_factory=list)
    reads: list[Call] = field(default_factory=list)
    running: bool = True
    _tasks: list[asyncio.Future[None]] = field(default_factory=list)

    def start(self, writers: int = 4, readers: int = 2) -> Load:
        self._tasks = [asyncio.ensure_future(self._write(i)) for i in range(writers)]
        self._tasks += [asyncio.ensure_future(self._read()) for _ in range(readers)]
        return self

    async def stop(self) -> None:
        self.running = False
        await asyncio.wait_for(asyncio.gather(*self._tasks), 30)

    async def _write(self, index: int) -> None:
        n = 0
        while self.running:
            n += 1
            title = f"ha {index}-{n}-{time.monotonic_ns()}"
            request = post_service_pb2.CreatePostRequest(
                author_id=self.author_id, title=title, content="c"
            )
            start = time.monotonic()
            try:
                await self.posts.CreatePost(request, timeout=3)
                code = "OK"
            except grpc.RpcError as error:
                code = error.code().name
            self.writes.append(Call(start, time.monotonic(), code, title))
            if code != "OK":
                await asyncio.sleep(0.05)  # a client's backoff

    async def _read(self) -> None:
        while self.running:
            start = time.monotonic()
            try:
                await self.posts.GetPost(
                    post_service_pb2.GetPostRequest(id=self.post_id), timeout=3
                )
                code = "OK"
            except grpc.RpcError as error:
                code = error.code().name
            self.reads.append(Call(start, time.monotonic(), code))
            await asyncio.sleep(0.01)

    def failed_writes(self) -> list[Call]:
        return [c for c in self.writes if c.code != "OK"]

    def acknowledged(self) -> list[str]:
        return [c.title for c in self.writes if c.code == "OK"]

    async def until_recovered(self, since: float, within: float, quiet: float = 2.0) -> None:
        """Returns once writes have failed after `since` and then gone `quiet` s without a
        failure (or `within` s have passed)."""
        while time.monotonic() - since < within:
            failed = [c for c in self.failed_writes() if c.end >= since]
            if failed and time.monotonic() - max(c.end for c in failed) >= quiet:
                return
            await asyncio.sleep(0.1)


async def on_node(cluster: patroni.PatroniCluster, name: str, titles: list[str]) -> int:
    db = await asyncpg.connect(plain(cluster.node_url(name, DATABASE)))
    try:
        found: int = await db.fetchval(
            "SELECT count(*) FROM posts WHERE title = ANY($1::text[])", titles
        )
        return found
    finally:
        await db.close()


def other(cluster: patroni.PatroniCluster, name: str) -> str:
    return next(n for n in cluster.nodes if n != name)


async def test_switchover_fails_writes_for_under_3_seconds_and_loses_none(
    cluster: patroni.PatroniCluster, seeded: tuple[int, int], posts: PostStub
) -> None:
    await asyncio.to_thread(cluster.wait_ready)
    leader = cluster.primary()
    assert leader is not None
    candidate = other(cluster, leader)
    load = Load(posts, *seeded).start()
    try:
        await asyncio.sleep(1.5)
        started = time.monotonic()
        done = await asyncio.to_thread(cluster.switchover, leader, candidate)
        assert done.returncode == 0, done.stdout + done.stderr
        await load.until_recovered(started, within=20)
        await asyncio.sleep(1.0)
    finally:
        await load.stop()
    failed = load.failed_writes()
    span = max(c.end for c in failed) - min(c.start for c in failed) if failed else 0.0
    acknowledged = load.acknowledged()
    print(
        f"switchover {leader}->{candidate}: {len(failed)} failed writes over {span:.2f}s,"
        f" {len(acknowledged)} acknowledged, reads {len(load.reads)}"
    )
    assert cluster.primary() == candidate
    assert {c.code for c in failed} <= {"UNAVAILABLE"}
    assert span < 3.0
    assert [c for c in load.reads if c.code != "OK"] == []
    assert any(c.start > started + span for c in load.writes if c.code == "OK")
    assert await on_node(cluster, candidate, acknowledged) == len(acknowledged)


async def test_sigkill_of_the_primary_writes_unavailable_until_promotion_then_ok_none_lost(
    cluster: patroni.PatroniCluster, seeded: tuple[int, int], posts: PostStub
) -> None:
    await asyncio.to_thread(cluster.wait_ready)
    victim = cluster.primary()
    assert victim is not None
    survivor = other(cluster, victim)
    load = Load(posts, *seeded).start()
    try:
        await asyncio.sleep(2.0)
        cluster.kill(victim)
        killed = time.monotonic()
        await load.until_recovered(killed, within=25)
        await asyncio.sleep(1.0)
    finally:
        await load.stop()
    failed = [c for c in load.failed_writes() if c.end >= killed]
    assert failed, "no write failed: the primary was not lost"
    last_failure = max(c.end for c in failed)
    recovered = min(c.end for c in load.writes if c.code == "OK" and c.start >= last_failure)
    acknowledged = load.acknowledged()
    print(
        f"SIGKILL {victim}: {len(failed)} writes failed, the last ending"
        f" {last_failure - killed:.2f}s after the kill, OK again at"
        f" {recovered - killed:.2f}s; {len(acknowledged)} acknowledged; reads {len(load.reads)}"
    )
    assert {c.code for c in load.failed_writes()} == {"UNAVAILABLE"}
    assert recovered - killed < 20
    assert cluster.primary() == survivor
    assert [c for c in load.reads if c.code != "OK"] == []
    assert await on_node(cluster, survivor, acknowledged) == len(acknowledged)
