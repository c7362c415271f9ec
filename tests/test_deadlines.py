"""Deadlines bound every statement: a call whose deadline passes while PostgreSQL is blocked
ends DEADLINE_EXCEEDED on time, and its statement does not stay behind in PostgreSQL.

The blocking is real: the test takes `LOCK TABLE users IN ACCESS EXCLUSIVE MODE` in a
transaction of its own, so every statement of the service on `users` waits on that lock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest
from blog.v1 import resources_pb2, user_service_pb2, user_service_pb2_grpc
from google.protobuf import field_mask_pb2
from grpc import aio

from service.server import Server
from tests.support import (
    make_user,
    rich_error,
    serving,
    settled_busy_backends,
    settled_checked_out,
    tables_locked,
)

if TYPE_CHECKING:
    from blog.v1.user_service_pb2_grpc import UserServiceAsyncStub as UserStub


async def test_read_with_100ms_deadline_blocked_by_a_lock_ends_deadline_exceeded_in_time(
    server: Server, users: UserStub, db: asyncpg.Connection, db_pool: asyncpg.Pool
) -> None:
    user_id = await make_user(db)
    await users.GetUser(user_service_pb2.GetUserRequest(id=user_id))  # warm: connection pooled

    async with tables_locked(db_pool, "users"):
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            await users.GetUser(user_service_pb2.GetUserRequest(id=user_id), timeout=0.1)
        elapsed = time.monotonic() - start
        # Checked while the lock is still held: a statement left behind would still be waiting.
        left_behind = await settled_busy_backends(db)

    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.09 <= elapsed < 0.3, elapsed
    assert left_behind == []
    assert await settled_checked_out(server) == 0
    # The service works again at once.
    assert (await users.GetUser(user_service_pb2.GetUserRequest(id=user_id))).id == user_id


async def test_write_with_100ms_deadline_blocked_by_a_lock_is_cancelled_and_rolled_back(
    server: Server, users: UserStub, db: asyncpg.Connection, db_pool: asyncpg.Pool
) -> None:
    user_id = await make_user(db)
    before = dict(await db.fetchrow("SELECT * FROM users WHERE id = $1", user_id))
    request = user_service_pb2.UpdateUserRequest(
        user=resources_pb2.User(id=user_id, username="renamed"),
        update_mask=field_mask_pb2.FieldMask(paths=["username"]),
    )

    async with tables_locked(db_pool, "users"):
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            await users.UpdateUser(request, timeout=0.1)
        elapsed = time.monotonic() - start
        left_behind = await settled_busy_backends(db)

    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.09 <= elapsed < 0.3, elapsed
    assert left_behind == []
    assert await settled_checked_out(server) == 0
    await asyncio.sleep(0.1)  # nothing may land late either
    assert dict(await db.fetchrow("SELECT * FROM users WHERE id = $1", user_id)) == before
    renamed = await users.UpdateUser(request, timeout=5)
    assert renamed.username == "renamed"


async def test_many_concurrent_deadlines_leave_nothing_running(
    server: Server, users: UserStub, db: asyncpg.Connection, db_pool: asyncpg.Pool
) -> None:
    user_id = await make_user(db)

    async def one(i: int) -> grpc.StatusCode:
        try:
            if i % 2:
                await users.GetUser(user_service_pb2.GetUserRequest(id=user_id), timeout=0.15)
            else:
                await users.UpdateUser(
                    user_service_pb2.UpdateUserRequest(
                        user=resources_pb2.User(id=user_id, username=f"name{i}"),
                        update_mask=field_mask_pb2.FieldMask(paths=["username"]),
                    ),
                    timeout=0.15,
                )
        except grpc.RpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    async with tables_locked(db_pool, "users"):
        codes = await asyncio.gather(*(one(i) for i in range(20)))
        left_behind = await settled_busy_backends(db, within=2.0)

    assert set(codes) == {grpc.StatusCode.DEADLINE_EXCEEDED}
    assert left_behind == []
    assert await settled_checked_out(server) == 0
    assert await db.fetchval("SELECT username FROM users WHERE id = $1", user_id) == "alice"


@pytest.fixture
async def short_default_server(database_url: str) -> AsyncIterator[UserStub]:
    """A second in-process server whose calls without a deadline get 0.3 s."""
    async with (
        serving(database_url, DEFAULT_TIMEOUT_SECONDS=0.3) as instance,
        aio.insecure_channel(f"127.0.0.1:{instance.port}") as channel,
    ):
        yield user_service_pb2_grpc.UserServiceStub(channel)


@pytest.mark.parametrize("write", [False, True], ids=["read", "write"])
async def test_call_without_deadline_gets_default_timeout(
    short_default_server: UserStub,
    db: asyncpg.Connection,
    db_pool: asyncpg.Pool,
    write: bool,
) -> None:
    users = short_default_server
    user_id = await make_user(db)

    async with tables_locked(db_pool, "users"):
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            if write:
                await users.UpdateUser(
                    user_service_pb2.UpdateUserRequest(
                        user=resources_pb2.User(id=user_id, username="renamed"),
                        update_mask=field_mask_pb2.FieldMask(paths=["username"]),
                    )
                )
            else:
                await users.GetUser(user_service_pb2.GetUserRequest(id=user_id))
        elapsed = time.monotonic() - start
        left_behind = await settled_busy_backends(db)

    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert error.reason == "DEADLINE_EXCEEDED"
    assert error.domain == "blog.v1"
    assert 0.28 <= elapsed < 0.6, elapsed
    assert left_behind == []
    assert await db.fetchval("SELECT username FROM users WHERE id = $1", user_id) == "alice"


async def test_calls_without_deadline_each_get_their_own_default_timeout(
    short_default_server: UserStub, db: asyncpg.Connection, db_pool: asyncpg.Pool
) -> None:
    """The timeouts share one timer (interceptors.timers): calls started 0.1 s apart each end
    0.3 s after their own start, a call that ends in time is left alone, and the timer is set
    again for calls that come after the others ended."""
    users = short_default_server
    user_id = await make_user(db)
    request = user_service_pb2.GetUserRequest(id=user_id)

    async def blocked_call() -> tuple[grpc.StatusCode, float]:
        start = time.monotonic()
        try:
            await users.GetUser(request)
        except grpc.RpcError as error:
            return error.code(), time.monotonic() - start
        return grpc.StatusCode.OK, time.monotonic() - start

    for _ in range(2):  # the second round finds the timer unset: every call before has ended
        async with tables_locked(db_pool, "users"):
            calls = []
            for _ in range(3):
                calls.append(asyncio.create_task(blocked_call()))
                await asyncio.sleep(0.1)
            outcomes = await asyncio.wait_for(asyncio.gather(*calls), timeout=5)
            left_behind = await settled_busy_backends(db)
        for code, elapsed in outcomes:
            assert code == grpc.StatusCode.DEADLINE_EXCEEDED
            assert 0.28 <= elapsed < 0.6, outcomes
        assert left_behind == []
        assert (await users.GetUser(request)).id == user_id  # in time: not cancelled
