"""A database outage, for real: the test owns an embedded PostgreSQL and stops it under a running
service. Calls end UNAVAILABLE (DATABASE_UNAVAILABLE) within their deadline, health goes
NOT_SERVING, and once the database is back the same process serves again by itself.

Also a real deadlock between the service's transaction and one of the test's: ABORTED.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from blog.v1 import (
    post_service_pb2,
    post_service_pb2_grpc,
    user_service_pb2,
    user_service_pb2_grpc,
)
from grpc_health.v1 import health_pb2

from devtools.embedded import EmbeddedPostgres
from service.db import migrate
from service.db.engine import APPLICATION_NAME
from tests.support import ServerProcess, plain, rich_error, wait_for_health

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def owned_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    pg = EmbeddedPostgres(Path(tmp_path_factory.mktemp("outage-pg")), fast=True)
    pg.start()
    migrate.upgrade(pg.url())
    try:
        yield pg
    finally:
        control(pg, "stop", "immediate")


@pytest.fixture(scope="module")
def service(owned_pg: EmbeddedPostgres) -> Iterator[ServerProcess]:
    env = {"DATABASE_URL": owned_pg.url(), "DB_POOL_TIMEOUT": "1", "LOG_LEVEL": "INFO"}
    with ServerProcess(env) as process:
        yield process


@pytest.fixture
def channel(service: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(service.address) as ch:
        yield ch


def control(pg: EmbeddedPostgres, action: str, mode: str = "fast") -> None:
    """pg.stop()/start(), retried: pg_ctl is forked from a process running gRPC threads, and a
    fork child has been seen to fail before exec there (a test-harness artefact), the more often
    the more threads are calling into gRPC at that moment."""
    attempts = 5
    for attempt in range(1, attempts + 1):
        try:
            pg.stop(mode) if action == "stop" else pg.start()
            return
        except RuntimeError:
            if attempt == attempts:
                raise
            time.sleep(0.1)


def outcome(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str, float]:
    start = time.monotonic()
    try:
        call()
    except grpc.RpcError as error:
        rich = rich_error(error)
        return rich.code, rich.reason, time.monotonic() - start
    return grpc.StatusCode.OK, "", time.monotonic() - start


def test_database_outage_is_unavailable_then_recovers_without_restart(
    owned_pg: EmbeddedPostgres, service: ServerProcess, channel: grpc.Channel
) -> None:
    users = user_service_pb2_grpc.UserServiceStub(channel)
    posts = post_service_pb2_grpc.PostServiceStub(channel)
    created = users.CreateUser(
        user_service_pb2.CreateUserRequest(
            email="outage@example.com", username="outage", password="password-123"
        ),
        timeout=5,
    )
    assert service.process is not None
    pid = service.process.pid
    serial = itertools.count()
    calls: dict[str, Callable[[], Any]] = {
        "GetUser": lambda: users.GetUser(user_service_pb2.GetUserRequest(id=created.id), timeout=2),
        "ListUsers": lambda: users.ListUsers(user_service_pb2.ListUsersRequest(), timeout=2),
        "CreatePost": lambda: posts.CreatePost(
            post_service_pb2.CreatePostRequest(author_id=created.id, title="t", content="c"),
            timeout=2,
        ),
        "StreamPosts": lambda: list(
            posts.StreamPosts(post_service_pb2.StreamPostsRequest(), timeout=2)
        ),
        "CreateUser": lambda: users.CreateUser(
            user_service_pb2.CreateUserRequest(
                email=f"during{next(serial)}@example.com",
                username=f"during{next(serial)}",
                password="password-123",
            ),
            timeout=2,
        ),
    }
    for name, call in calls.items():
        assert outcome(call)[0] == grpc.StatusCode.OK, name

    control(owned_pg, "stop")
    try:
        # Every RPC kind, several times (pooled connections die first, then connects fail).
        for _ in range(3):
            for name, call in calls.items():
                code, reason, elapsed = outcome(call)
                assert code == grpc.StatusCode.UNAVAILABLE, (name, code, reason)
                assert reason == "DATABASE_UNAVAILABLE", (name, reason)
                assert elapsed < 2.0, (name, elapsed)
        # A short deadline is honoured too: no hang on a dead database.
        code, _, elapsed = outcome(
            lambda: users.GetUser(user_service_pb2.GetUserRequest(id=created.id), timeout=0.3)
        )
        assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        assert elapsed < 0.6
        assert wait_for_health(service.address, NOT_SERVING, timeout=5.0, process=service) < 5.0
    finally:
        control(owned_pg, "start")
    back = time.monotonic()

    wait_for_health(service.address, SERVING, timeout=10.0, process=service)
    deadline = back + 10.0
    pending = dict(calls)
    while pending and time.monotonic() < deadline:
        for name, call in list(pending.items()):
            code, reason, _ = outcome(call)
            assert code in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE), (name, code, reason)
            if code == grpc.StatusCode.OK:
                del pending[name]
        time.sleep(0.1)
    assert not pending, f"still failing 10 s after the database came back: {sorted(pending)}"
    assert time.monotonic() - back < 10.0
    # The same process, never restarted; and nothing unexpected was logged.
    assert service.process.poll() is None
    assert service.process.pid == pid
    assert users.GetUser(user_service_pb2.GetUserRequest(id=created.id), timeout=2).id == created.id
    assert "Traceback" not in service.output()


def test_outage_mid_stream_ends_unavailable_not_internal(
    owned_pg: EmbeddedPostgres, service: ServerProcess, channel: grpc.Channel
) -> None:
    """Immediate shutdown (a crash) while calls run: still UNAVAILABLE, then recovery."""
    users = user_service_pb2_grpc.UserServiceStub(channel)
    control(owned_pg, "stop", "immediate")
    try:
        code, reason, _ = outcome(
            lambda: users.ListUsers(user_service_pb2.ListUsersRequest(), timeout=2)
        )
        assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
    finally:
        control(owned_pg, "start")
    wait_for_health(service.address, SERVING, timeout=10.0, process=service)
    end = time.monotonic() + 10.0
    while True:
        code, reason, _ = outcome(
            lambda: users.ListUsers(user_service_pb2.ListUsersRequest(), timeout=2)
        )
        if code == grpc.StatusCode.OK or time.monotonic() > end:
            break
        assert code == grpc.StatusCode.UNAVAILABLE, (code, reason)
        time.sleep(0.1)
    assert code == grpc.StatusCode.OK


def _burst(calls: list[Callable[[], Any]]) -> list[tuple[grpc.StatusCode, str, float]]:
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(outcome, calls))


def test_idle_service_heals_a_quick_database_restart_within_seconds(
    owned_pg: EmbeddedPostgres, service: ServerProcess, channel: grpc.Channel
) -> None:
    """A restart of well under a second while the service is idle. Once a health probe has
    run after the database's return, health is SERVING and a burst of 60 calls (which needs
    more connections than were ever opened) succeeds: no call trips over a connection left over
    from before the restart. Before: NOT_SERVING for 31-39 s, then 15 of 60 UNAVAILABLE."""
    users = user_service_pb2_grpc.UserServiceStub(channel)
    posts = post_service_pb2_grpc.PostServiceStub(channel)
    author = users.CreateUser(
        user_service_pb2.CreateUserRequest(
            email="quick-restart@example.com", username="quick_restart", password="password-123"
        ),
        timeout=5,
    )

    def read() -> Any:
        return users.GetUser(user_service_pb2.GetUserRequest(id=author.id), timeout=5)

    def write() -> Any:
        return posts.CreatePost(
            post_service_pb2.CreatePostRequest(author_id=author.id, title="t", content="c"),
            timeout=5,
        )

    calls: list[Callable[[], Any]] = [read, write] * 30
    assert all(code == grpc.StatusCode.OK for code, _, _ in _burst(calls))  # fill both pools

    control(owned_pg, "stop")
    control(owned_pg, "start")
    back = time.monotonic()
    time.sleep(1.5)  # at least one health probe (every second) after the return
    wait_for_health(service.address, SERVING, timeout=10.0, process=service)
    assert time.monotonic() - back < 10.0
    results = _burst(calls)
    failed = [(code, reason) for code, reason, _ in results if code != grpc.StatusCode.OK]
    assert not failed, failed
    assert "Traceback" not in service.output()


def test_fast_restarts_under_load_end_unavailable_never_internal(
    owned_pg: EmbeddedPostgres, service: ServerProcess, channel: grpc.Channel
) -> None:
    """`pg_ctl -m fast` restarts while 8 clients read and write nonstop: each failed call is
    UNAVAILABLE (asyncpg's InternalClientError used to end INTERNAL), and 10 s after the last
    restart every call succeeds again."""
    users = user_service_pb2_grpc.UserServiceStub(channel)
    posts = post_service_pb2_grpc.PostServiceStub(channel)
    author = users.CreateUser(
        user_service_pb2.CreateUserRequest(
            email="restart-load@example.com", username="restart_load", password="password-123"
        ),
        timeout=5,
    )
    stop = threading.Event()
    seen: list[tuple[grpc.StatusCode, str]] = []

    def read() -> Any:
        return users.ListUsers(user_service_pb2.ListUsersRequest(page_size=5), timeout=2)

    def write() -> Any:
        return posts.CreatePost(
            post_service_pb2.CreatePostRequest(author_id=author.id, title="t", content="c"),
            timeout=2,
        )

    def client(n: int) -> None:
        while not stop.is_set():
            code, reason, _ = outcome(read if n % 2 else write)
            seen.append((code, reason))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(3):
            time.sleep(0.7)
            control(owned_pg, "stop")
            control(owned_pg, "start")
        back = time.monotonic()
        time.sleep(1.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    bad = {
        pair for pair in seen if pair[0] not in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE)
    }
    assert not bad, bad
    wait_for_health(service.address, SERVING, timeout=10.0, process=service)
    while time.monotonic() - back < 10.0:
        if all(
            code == grpc.StatusCode.OK
            for code, _, _ in _burst(
                [lambda: users.ListUsers(user_service_pb2.ListUsersRequest(), timeout=2)] * 20
            )
        ):
            break
        time.sleep(0.2)
    else:
        pytest.fail("calls still failing 10 s after the last restart")
    assert "Traceback" not in service.output()


def test_real_deadlock_is_aborted_so_the_client_retries(
    owned_pg: EmbeddedPostgres, service: ServerProcess, channel: grpc.Channel
) -> None:
    """The service's batch insert and the test's transaction lock two users in opposite order.

    The batch's foreign-key checks take KEY SHARE locks on its authors in request order (a,
    then b); the test holds b FOR UPDATE, then asks for a FOR UPDATE. PostgreSQL's deadlock
    detector runs in the backend that has waited deadlock_timeout: ours waits 10 s, the
    service's 3 s (set server-wide below), so it is the service's transaction that is the victim.
    """
    posts = post_service_pb2_grpc.PostServiceStub(channel)
    url = plain(owned_pg.url())

    async def setup() -> tuple[int, int]:
        connection = await asyncpg.connect(url)
        try:
            await connection.execute("TRUNCATE users, posts RESTART IDENTITY CASCADE")
            ids = []
            for name in ("lock_a", "lock_b"):
                ids.append(
                    await connection.fetchval(
                        "INSERT INTO users (email, username, hashed_password)"
                        " VALUES ($1, $2, 'x') RETURNING id",
                        f"{name}@example.com",
                        name,
                    )
                )
            return ids[0], ids[1]
        finally:
            await connection.close()

    # A write that succeeds first: connections the writer pool kept across the previous
    # test's database restart are dropped by the first call that meets one.
    users = user_service_pb2_grpc.UserServiceStub(channel)
    end = time.monotonic() + 10
    for i in itertools.count():
        request = user_service_pb2.CreateUserRequest(
            email=f"warm{i}@example.com", username=f"warm{i}", password="password-123"
        )
        code, _, _ = outcome(lambda r=request: users.CreateUser(r, timeout=2))  # type: ignore[misc]
        if code == grpc.StatusCode.OK or time.monotonic() > end:
            break
    a, b = asyncio.run(setup())
    # PostgreSQL checks for a deadlock once, deadlock_timeout after a backend starts waiting.
    # The service's backend starts waiting first; the test completes the cycle a moment later.
    # With the default 1 s a slow moment on a loaded machine could let the service's single
    # check run before the cycle exists, leaving only the test's 10 s check (and the call's
    # deadline). 3 s leaves ample room and keeps the service's backend the one that checks first.
    asyncio.run(_set_deadlock_timeout(url, "3s"))

    result: dict[str, tuple[grpc.StatusCode, str, float]] = {}
    test_side: dict[str, object] = {}

    async def test_transaction(service_waiting: threading.Event) -> None:
        connection = await asyncpg.connect(url)
        try:
            await connection.execute("SET deadlock_timeout = '10s'")
            async with connection.transaction():
                await connection.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", b)
                await asyncio.to_thread(service_waiting.wait, 5)
                # Wait until the service's insert is blocked on b (it already holds a).
                for _ in range(200):
                    waiting = await connection.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
                        " AND wait_event_type = 'Lock'",
                        APPLICATION_NAME,
                    )
                    if waiting:
                        break
                    await asyncio.sleep(0.01)
                try:
                    await connection.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", a)
                    test_side["locked_a"] = True
                except asyncpg.DeadlockDetectedError:
                    test_side["deadlock_on_test_side"] = True
        finally:
            await connection.close()

    started = threading.Event()
    runner = threading.Thread(target=lambda: asyncio.run(test_transaction(started)))
    runner.start()
    time.sleep(0.1)  # the test's lock on b is taken

    def batch() -> None:
        posts.BatchCreatePosts(
            post_service_pb2.BatchCreatePostsRequest(
                requests=[
                    post_service_pb2.CreatePostRequest(author_id=a, title="ta", content="c"),
                    post_service_pb2.CreatePostRequest(author_id=b, title="tb", content="c"),
                ]
            ),
            timeout=10,
        )

    started.set()
    result["batch"] = outcome(batch)
    runner.join(15)

    code, reason, _ = result["batch"]
    assert test_side == {"locked_a": True}, test_side
    assert code == grpc.StatusCode.ABORTED, (code, reason)
    assert reason == "TRANSACTION_CONFLICT"

    async def count_posts() -> int:
        connection = await asyncpg.connect(url)
        try:
            return int(await connection.fetchval("SELECT count(*) FROM posts"))
        finally:
            await connection.close()

    assert asyncio.run(count_posts()) == 0
    # Retrying, as ABORTED tells the client to, succeeds.
    assert outcome(batch)[0] == grpc.StatusCode.OK
    asyncio.run(_set_deadlock_timeout(url, None))


async def _set_deadlock_timeout(url: str, value: str | None) -> None:
    """Sets (None: resets) deadlock_timeout server-wide; every session picks it up on reload."""
    connection = await asyncpg.connect(url)
    try:
        if value is None:
            await connection.execute("ALTER SYSTEM RESET deadlock_timeout")
        else:
            await connection.execute(f"ALTER SYSTEM SET deadlock_timeout = '{value}'")
        await connection.execute("SELECT pg_reload_conf()")
    finally:
        await connection.close()
