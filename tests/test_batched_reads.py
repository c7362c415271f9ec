"""Point reads batched under load (service.repositories.batching), seen from clients and PostgreSQL.

To make lookups overlap for certain, a test holds `LOCK TABLE users` (tests.support.locks): the
first lookup goes alone and waits on the lock; the ones sent meanwhile queue behind it and go as
one batch statement (`= ANY($1)`) when it returns or gives up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
from blog.v1 import post_service_pb2, user_service_pb2

from service.server import Server
from tests.support import (
    busy_backends,
    make_post,
    make_user,
    settled_busy_backends,
    settled_checked_out,
    tables_locked,
    unique,
    waiting_on_lock,
)
from tests.support.statements import StatementCounter

if TYPE_CHECKING:
    from blog.v1.post_service_pb2_grpc import PostServiceAsyncStub as PostStub
    from blog.v1.user_service_pb2_grpc import UserServiceAsyncStub as UserStub

MISSING = 2**62  # no such row


def get_user(users: UserStub, user_id: int, timeout: float = 10.0) -> asyncio.Task[Any]:
    return asyncio.ensure_future(
        users.GetUser(user_service_pb2.GetUserRequest(id=user_id), timeout=timeout)
    )


async def outcome(task: Awaitable[Any]) -> Any:
    """The response, or the status code the client read."""
    try:
        return await task
    except grpc.RpcError as error:
        return error.code()


def ours(statements: list[str]) -> list[str]:
    """The service's statements, without asyncpg's one-off type introspection of a connection."""
    return [s for s in statements if "typeinfo_tree" not in s and "set_config('jit'" not in s]


def batched(statements: list[str]) -> list[str]:
    return [s for s in ours(statements) if "= any($1" in s or "unnest($1" in s]


async def batch_waiting(db: asyncpg.Connection) -> bool:
    """Whether a batch statement of the service is at PostgreSQL (waiting on the lock)."""
    return bool(batched(await busy_backends(db)))


async def until_async(condition: Callable[[], Awaitable[bool]], within: float = 5.0) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while loop.time() < end:
        if await condition():
            return True
        await asyncio.sleep(0.02)
    return False


async def test_concurrent_lookups_of_existing_and_missing_ids_each_get_their_own_answer(
    server: Server,
    users: UserStub,
    db: asyncpg.Connection,
    db_pool: asyncpg.Pool,
    counter: StatementCounter,
) -> None:
    ids = [await make_user(db, unique()) for _ in range(20)]
    asked = [*ids, *ids[:5], MISSING, MISSING + 1, MISSING]  # repeats and missing ids too
    counter.sent.clear()
    async with tables_locked(db_pool, "users"):
        first = get_user(users, ids[0])
        assert await waiting_on_lock(db, at_least=1) == 1  # it went alone, at once
        calls = [get_user(users, user_id) for user_id in asked]
        await asyncio.sleep(0.2)  # all of them sent, queued behind the first
        assert await waiting_on_lock(db, at_least=2, within=0.3) == 1  # none went on its own
    answers = [await outcome(call) for call in calls]

    assert (await first).id == ids[0]
    for user_id, answer in zip(asked, answers, strict=True):
        if user_id >= MISSING:
            assert answer == grpc.StatusCode.NOT_FOUND
        else:
            assert answer.id == user_id
    await asyncio.sleep(0.01)
    # The first lookup alone, then one statement for all 28 queued behind it.
    assert len(batched(counter.counted())) == 1, counter.counted()
    assert len(ours(counter.counted())) == 2, counter.counted()
    assert await settled_checked_out(server) == 0


async def test_a_burst_of_lookups_without_a_lock_answers_every_one(
    server: Server, users: UserStub, db: asyncpg.Connection
) -> None:
    ids = [await make_user(db, unique()) for _ in range(50)]
    asked = [user_id for user_id in ids for _ in range(3)] + [MISSING + i for i in range(50)]
    answers = await asyncio.gather(*(outcome(get_user(users, user_id)) for user_id in asked))
    for user_id, answer in zip(asked, answers, strict=True):
        if user_id >= MISSING:
            assert answer == grpc.StatusCode.NOT_FOUND
        else:
            assert answer.id == user_id
    assert await settled_checked_out(server) == 0


async def test_batched_lookups_by_email_are_case_insensitive_and_per_caller(
    users: UserStub, db: asyncpg.Connection, db_pool: asyncpg.Pool, counter: StatementCounter
) -> None:
    names = [unique() for _ in range(5)]
    ids = {name: await make_user(db, name, email=f"{name}@Example.com") for name in names}
    asked = [
        *(f"{n}@example.com" for n in names),
        *(f"{n.upper()}@EXAMPLE.COM" for n in names),
        f"{names[0]}@example.com",  # the same key twice
        "nobody-" + unique() + "@example.com",
    ]
    counter.sent.clear()
    async with tables_locked(db_pool, "users"):
        first = asyncio.ensure_future(
            users.GetUserByEmail(user_service_pb2.GetUserByEmailRequest(email=asked[0]))
        )
        await waiting_on_lock(db, at_least=1)
        calls = [
            asyncio.ensure_future(
                users.GetUserByEmail(user_service_pb2.GetUserByEmailRequest(email=email))
            )
            for email in asked
        ]
        await asyncio.sleep(0.2)
    answers = [await outcome(call) for call in calls]

    assert (await first).id == ids[names[0]]
    for email, answer in zip(asked, answers, strict=True):
        if email.startswith("nobody-"):
            assert answer == grpc.StatusCode.NOT_FOUND
        else:
            name = next(n for n in names if email.lower().startswith(n.lower() + "@"))
            assert answer.id == ids[name]
            assert answer.email == f"{name}@Example.com"
    await asyncio.sleep(0.01)
    assert len(batched(counter.counted())) == 1, counter.counted()


async def test_batched_post_lookups_each_get_their_own_post_or_not_found(
    posts: PostStub, db: asyncpg.Connection, db_pool: asyncpg.Pool, counter: StatementCounter
) -> None:
    author = await make_user(db, unique())
    made = [await make_post(posts, author, title=f"t{i}") for i in range(6)]
    asked = [p.id for p in made] + [MISSING]
    counter.sent.clear()
    async with tables_locked(db_pool, "posts"):
        first = asyncio.ensure_future(posts.GetPost(post_service_pb2.GetPostRequest(id=asked[0])))
        await waiting_on_lock(db, at_least=1)
        calls = [
            asyncio.ensure_future(posts.GetPost(post_service_pb2.GetPostRequest(id=post_id)))
            for post_id in asked
        ]
        await asyncio.sleep(0.2)
    answers = [await outcome(call) for call in calls]

    assert (await first).id == asked[0]
    for post, answer in zip(made, answers[:-1], strict=True):
        assert (answer.id, answer.title, answer.author.id) == (post.id, post.title, author)
    assert answers[-1] == grpc.StatusCode.NOT_FOUND
    await asyncio.sleep(0.01)
    assert len(batched(counter.counted())) == 1, counter.counted()


async def test_a_caller_whose_deadline_passes_in_a_batch_ends_deadline_exceeded_the_others_get_theirs(
    server: Server, users: UserStub, db: asyncpg.Connection, db_pool: asyncpg.Pool
) -> None:
    ids = [await make_user(db, unique()) for _ in range(5)]
    async with tables_locked(db_pool, "users"):
        first = get_user(users, ids[0], timeout=0.3)
        await waiting_on_lock(db, at_least=1)
        short = get_user(users, ids[1], timeout=0.9)
        others = [get_user(users, user_id) for user_id in ids[2:]]
        # The first gives up at its deadline; the queue goes as one batch, which waits in turn.
        assert await outcome(first) == grpc.StatusCode.DEADLINE_EXCEEDED
        assert await until_async(lambda: batch_waiting(db))
        # One caller of the batch reaches its deadline while the batch is at the database.
        assert await outcome(short) == grpc.StatusCode.DEADLINE_EXCEEDED
        assert await batch_waiting(db)  # still there: the others are waiting on it
        assert not any(call.done() for call in others)
    answers = [await outcome(call) for call in others]

    assert [answer.id for answer in answers] == ids[2:]
    assert await settled_checked_out(server) == 0


async def test_a_queued_caller_whose_deadline_passes_leaves_the_queue_the_others_get_theirs(
    server: Server, users: UserStub, db: asyncpg.Connection, db_pool: asyncpg.Pool
) -> None:
    ids = [await make_user(db, unique()) for _ in range(4)]
    async with tables_locked(db_pool, "users"):
        first = get_user(users, ids[0])
        await waiting_on_lock(db, at_least=1)
        short = get_user(users, ids[1], timeout=0.2)
        others = [get_user(users, user_id) for user_id in ids[2:]]
        assert await outcome(short) == grpc.StatusCode.DEADLINE_EXCEEDED  # while queued
        assert not await batch_waiting(db)  # nothing was sent for it
    answers = [await outcome(call) for call in others]

    assert (await first).id == ids[0]
    assert [answer.id for answer in answers] == ids[2:]
    assert await settled_checked_out(server) == 0


async def test_when_every_caller_of_a_batch_gives_up_its_statement_is_cancelled_in_postgresql(
    server: Server, users: UserStub, db: asyncpg.Connection, db_pool: asyncpg.Pool
) -> None:
    ids = [await make_user(db, unique()) for _ in range(5)]
    async with tables_locked(db_pool, "users"):
        first = get_user(users, ids[0], timeout=0.3)
        await waiting_on_lock(db, at_least=1)
        queued = [get_user(users, user_id, timeout=0.8) for user_id in ids[1:]]
        assert await outcome(first) == grpc.StatusCode.DEADLINE_EXCEEDED
        assert await until_async(lambda: batch_waiting(db))
        codes = [await outcome(call) for call in queued]
        # Checked while the lock is still held: a statement left behind would still be waiting.
        left_behind = await settled_busy_backends(db)

    assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED] * 4
    assert left_behind == []
    assert await settled_checked_out(server) == 0
    assert (await get_user(users, ids[1])).id == ids[1]  # and it works again at once


async def test_lookups_all_cut_short_together_leave_the_next_ones_served(
    server: Server, users: UserStub, db: asyncpg.Connection, db_pool: asyncpg.Pool
) -> None:
    """Callers that all give up in the same instant, also just as their batch is being sent,
    must not leave the lookup thinking a statement is still at the database."""
    user_id = await make_user(db, unique())
    for timeout in (0.05, 0.1, 0.15, 0.2):
        async with tables_locked(db_pool, "users"):
            calls = [get_user(users, user_id, timeout=timeout) for _ in range(30)]
            codes = {await outcome(call) for call in calls}
        assert codes == {grpc.StatusCode.DEADLINE_EXCEEDED}
    for _ in range(3):  # alone, and queued behind one another
        answers = await asyncio.gather(*(get_user(users, user_id, timeout=2) for _ in range(20)))
        assert {answer.id for answer in answers} == {user_id}
    assert await settled_busy_backends(db) == []
    assert await settled_checked_out(server) == 0


async def test_a_lone_lookup_sends_its_own_statement_at_once(
    server: Server, users: UserStub, db: asyncpg.Connection, db_pool: asyncpg.Pool
) -> None:
    user_id = await make_user(db, unique())
    async with tables_locked(db_pool, "users"):
        call = get_user(users, user_id)
        # At the database while the lock is held: it did not wait for anything of ours.
        assert await waiting_on_lock(db, at_least=1, within=1.0) == 1
        [statement] = await busy_backends(db)
        assert "users.id = $1" in statement
        assert not batched([statement])
    assert (await call).id == user_id
