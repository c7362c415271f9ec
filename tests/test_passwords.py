"""Passwords: Argon2id parameters, rehash on login, timing that hides which logins exist,
and hashing off the event loop so a burst of logins cannot stall other calls."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import pytest
from blog.v1 import post_service_pb2, post_service_pb2_grpc, user_service_pb2, user_service_pb2_grpc
from grpc import aio

from service.server import Server
from tests.support import PASSWORD, create_user, started_server

if TYPE_CHECKING:
    from blog.v1.user_service_pb2_grpc import UserServiceAsyncStub as UserStub


@pytest.fixture
async def costly_server(database_url: str, db_pool: asyncpg.Pool) -> AsyncIterator[Server]:
    """A server with real Argon2 cost (the OWASP minimum) and a single hashing thread."""
    server = await started_server(
        database_url, ARGON2_MEMORY_KIB=19 * 1024, ARGON2_TIME_COST=2, PASSWORD_HASH_THREADS=1
    )
    yield server
    await server.stop()


def _stub(server: Server) -> tuple[aio.Channel, UserStub]:
    channel = aio.insecure_channel(f"127.0.0.1:{server.port}")
    stub: Any = user_service_pb2_grpc.UserServiceStub(channel)
    return channel, stub


async def _create(users: UserStub, name: str) -> int:
    return int((await create_user(users, name)).id)


async def _stored_hash(db: asyncpg.Connection, user_id: int) -> str:
    value = await db.fetchval("SELECT hashed_password FROM users WHERE id = $1", user_id)
    return str(value)


async def test_hash_is_argon2id_with_the_configured_cost(
    costly_server: Server, db: asyncpg.Connection
) -> None:
    channel, users = _stub(costly_server)
    async with channel:
        user_id = await _create(users, "owasp")
    stored = await _stored_hash(db, user_id)
    assert stored.startswith("$argon2id$")
    assert "m=19456,t=2,p=1" in stored


async def test_login_rehashes_when_the_parameters_changed(
    database_url: str, db: asyncpg.Connection
) -> None:
    cheap = await started_server(database_url, ARGON2_MEMORY_KIB=1024, ARGON2_TIME_COST=1)
    try:
        channel, users = _stub(cheap)
        async with channel:
            user_id = await _create(users, "rehash")
    finally:
        await cheap.stop()
    assert "m=1024,t=1" in await _stored_hash(db, user_id)

    stronger = await started_server(database_url, ARGON2_MEMORY_KIB=2048, ARGON2_TIME_COST=2)
    try:
        channel, users = _stub(stronger)
        async with channel:
            with pytest.raises(grpc.RpcError):
                await users.AuthenticateUser(
                    user_service_pb2.AuthenticateUserRequest(login="rehash", password="wrong-one")
                )
            assert "m=1024,t=1" in await _stored_hash(db, user_id), "a failed login rehashed"
            await users.AuthenticateUser(
                user_service_pb2.AuthenticateUserRequest(login="rehash", password=PASSWORD)
            )
            assert "m=2048,t=2" in await _stored_hash(db, user_id)
            # The upgraded hash still verifies.
            await users.AuthenticateUser(
                user_service_pb2.AuthenticateUserRequest(login="rehash", password=PASSWORD)
            )
    finally:
        await stronger.stop()


async def _login_seconds(users: UserStub, login: str, password: str) -> float:
    start = time.perf_counter()
    with pytest.raises(grpc.RpcError) as caught:
        await users.AuthenticateUser(
            user_service_pb2.AuthenticateUserRequest(login=login, password=password)
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    return time.perf_counter() - start


async def test_unknown_login_costs_what_a_wrong_password_costs(costly_server: Server) -> None:
    channel, users = _stub(costly_server)
    async with channel:
        await _create(users, "timing")
        wrong = [await _login_seconds(users, "timing", "not-the-password") for _ in range(5)]
        unknown = [await _login_seconds(users, "nobody-here", "not-the-password") for _ in range(5)]
    # Without the dummy verification an unknown login answers in about a millisecond, against
    # tens of milliseconds for a real Argon2 check: a factor well beyond scheduling noise.
    assert statistics.median(unknown) > 0.5 * statistics.median(wrong), (unknown, wrong)


async def test_a_burst_of_logins_does_not_stall_other_calls(costly_server: Server) -> None:
    channel, users = _stub(costly_server)
    async with channel:
        user_id = await _create(users, "burst")
        request = user_service_pb2.AuthenticateUserRequest(login="burst", password=PASSWORD)

        async def reads_during(burst: asyncio.Future[Any]) -> list[float]:
            latencies = []
            while not burst.done():
                start = time.perf_counter()
                await users.GetUser(user_service_pb2.GetUserRequest(id=user_id))
                latencies.append(time.perf_counter() - start)
            return latencies

        start = time.perf_counter()
        burst: asyncio.Future[Any] = asyncio.gather(
            *(users.AuthenticateUser(request) for _ in range(16))
        )
        latencies = await reads_during(burst)
        await burst
        burst_seconds = time.perf_counter() - start
    # One hashing thread works through the 16 checks one after another, while reads keep
    # being answered: none of them waits for more than a small part of the burst.
    assert len(latencies) >= 5, latencies
    assert max(latencies) < burst_seconds / 4, (max(latencies), burst_seconds)


async def test_a_flood_of_wrong_logins_cannot_slow_other_clients_writes(
    database_url: str, db_pool: asyncpg.Pool
) -> None:
    """150 concurrent logins (wrong passwords and unknown logins) from one client, on a write
    pool of 4: no login holds a connection while it waits for a hash, and past the hashing
    capacity (2 threads + 16 waiting) a login is refused RESOURCE_EXHAUSTED at once. Another
    client's CreatePost keeps a median under 0.5 s. Before: logins held write connections
    inside open transactions while queued for the hash; CreatePost took 3.6-4.9 s or failed
    UNAVAILABLE."""
    server = await started_server(
        database_url,
        ARGON2_MEMORY_KIB=19 * 1024,
        ARGON2_TIME_COST=2,
        PASSWORD_HASH_THREADS=2,
        DB_POOL_SIZE=4,
    )
    attacker, users = _stub(server)
    victim = aio.insecure_channel(f"127.0.0.1:{server.port}")
    writer: Any = post_service_pb2_grpc.PostServiceStub(victim)
    try:
        author = await _create(users, "flooded")

        async def login(n: int) -> tuple[grpc.StatusCode, str, float]:
            name = "flooded" if n % 2 else f"nobody{n}"
            start = time.perf_counter()
            try:
                await users.AuthenticateUser(
                    user_service_pb2.AuthenticateUserRequest(login=name, password="wrong-password")
                )
                return grpc.StatusCode.OK, name, 0.0
            except grpc.aio.AioRpcError as error:
                return error.code(), name, time.perf_counter() - start

        async def writes_during(flood: asyncio.Future[Any]) -> list[float]:
            latencies = []
            while not flood.done():
                start = time.perf_counter()
                await writer.CreatePost(
                    post_service_pb2.CreatePostRequest(author_id=author, title="t", content="c"),
                    timeout=10,
                )
                latencies.append(time.perf_counter() - start)
            return latencies

        flood: asyncio.Future[Any] = asyncio.gather(*(login(n) for n in range(150)))
        latencies = await writes_during(flood)
        outcomes = await flood
    finally:
        await victim.close(None)
        await attacker.close(None)
        await server.stop()
    codes = {code for code, _, _ in outcomes}
    assert codes <= {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    refused = [
        (name, seconds) for code, name, seconds in outcomes if code.name == "RESOURCE_EXHAUSTED"
    ]
    assert len(refused) >= 100, len(refused)
    # Refused at once, whether or not the login exists.
    assert {name == "flooded" for name, _ in refused} == {True, False}
    # Refused without waiting for a hash: sooner than the logins that were checked.
    checked = [seconds for code, _, seconds in outcomes if code.name == "UNAUTHENTICATED"]
    assert statistics.median(s for _, s in refused) < statistics.median(checked)
    assert latencies and statistics.median(latencies) < 0.5, latencies


async def _login_status(users: UserStub, login: str, password: str) -> grpc.StatusCode:
    try:
        await users.AuthenticateUser(
            user_service_pb2.AuthenticateUserRequest(login=login, password=password)
        )
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_a_login_racing_a_password_change_never_undoes_it(database_url: str) -> None:
    """A login that upgrades an old hash writes it back only over the hash it verified.

    The users are created under cheaper Argon2 parameters than the server that then logs them
    in, so every login rehashes. Unconditionally written, the rehash of the old password lands
    after the change (a verify plus a hash, against one hash) and the old password comes back.
    """
    trials = 20
    names = [f"race{i}" for i in range(trials)]
    cheap = await started_server(database_url, ARGON2_MEMORY_KIB=1024, ARGON2_TIME_COST=1)
    try:
        channel, users = _stub(cheap)
        async with channel:
            ids = [await _create(users, name) for name in names]
    finally:
        await cheap.stop()

    stronger = await started_server(
        database_url, ARGON2_MEMORY_KIB=4096, ARGON2_TIME_COST=2, PASSWORD_HASH_THREADS=2
    )
    new_password = "a brand new password"
    undone = []
    try:
        channel, users = _stub(stronger)
        async with channel:
            for name, user_id in zip(names, ids, strict=True):
                login, _ = await asyncio.gather(
                    _login_status(users, name, PASSWORD),
                    users.ChangePassword(
                        user_service_pb2.ChangePasswordRequest(
                            id=user_id, new_password=new_password
                        )
                    ),
                )
                assert login in (grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED), login
                new = await _login_status(users, name, new_password)
                old = await _login_status(users, name, PASSWORD)
                if (new, old) != (grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED):
                    undone.append((name, new, old))
    finally:
        await stronger.stop()
    assert not undone, f"{len(undone)} of {trials} password changes undone by a login: {undone}"
