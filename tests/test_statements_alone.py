"""Round trips per RPC: a write of one statement runs it alone, without BEGIN and COMMIT, and
only where that is safe (service.db.session, domain.ports.CommitsAlone).

Counted at the driver (tests.support.statements): what each RPC sends PostgreSQL, transaction
control included, on warm connections. A call whose statements stand or fall together still
gets one transaction, and rolls back as a whole; a statement alone is bounded by the write
pool's statement_timeout, so that it is over long before its call's deadline: one that waits
longer (on a lock) runs again in a transaction, and nothing commits after the client was told
DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import pytest
from blog.v1 import post_service_pb2, resources_pb2, user_service_pb2
from google.protobuf import field_mask_pb2

from service.db.session import ALONE_STATEMENT_SECONDS, ALONE_TIME_LEFT_SECONDS
from tests.support import create_user, make_user, row_locked, waiting_on_lock
from tests.support.statements import StatementCounter

if TYPE_CHECKING:
    from blog.v1.post_service_pb2_grpc import PostServiceAsyncStub as PostStub
    from blog.v1.user_service_pb2_grpc import UserServiceAsyncStub as UserStub

Call = Callable[[], Awaitable[Any]]


def first_words(statements: list[str]) -> list[str]:
    return [s.split()[0].upper().rstrip(";") for s in statements]


def new_post(author: int, title: str = "t", request_id: str = "") -> Any:
    return post_service_pb2.CreatePostRequest(
        author_id=author, title=title, content="c", request_id=request_id
    )


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


async def round_trips(counter: StatementCounter, call: Call) -> list[str]:
    """The first word of every statement `call` sends, run twice: the second, counted, on
    connections that are open and have the statement prepared."""
    await call()
    return first_words(await counter.count(call, transaction_control=True))


async def test_every_write_of_one_statement_is_one_round_trip(
    counter: StatementCounter, users: UserStub, posts: PostStub, db: asyncpg.Connection
) -> None:
    """No deadline (so DEFAULT_TIMEOUT_SECONDS, 30 s): every single-statement write sends its
    statement and nothing else, and it is committed: another connection sees it."""
    author = await make_user(db, "author")
    post = (await posts.CreatePost(new_post(author))).id
    victims = iter([await make_user(db, f"victim{i}") for i in range(2)])
    victim_posts = iter([(await posts.CreatePost(new_post(author))).id for _ in range(2)])
    created = iter(range(2))

    calls: dict[str, tuple[Call, str]] = {
        "CreatePost": (lambda: posts.CreatePost(new_post(author, "alone")), "WITH"),
        "UpdatePost": (
            lambda: posts.UpdatePost(
                post_service_pb2.UpdatePostRequest(
                    post=resources_pb2.Post(id=post, title="renamed"), update_mask=mask("title")
                )
            ),
            "WITH",
        ),
        "UpdateUser": (
            lambda: users.UpdateUser(
                user_service_pb2.UpdateUserRequest(
                    user=resources_pb2.User(id=author, display_name="Ada"),
                    update_mask=mask("display_name"),
                )
            ),
            "UPDATE",
        ),
        "ChangePassword": (
            lambda: users.ChangePassword(
                user_service_pb2.ChangePasswordRequest(id=author, new_password="password-456")
            ),
            "UPDATE",
        ),
        "CreateUser": (lambda: create_user(users, f"new{next(created)}"), "INSERT"),
        "DeletePost": (
            lambda: posts.DeletePost(post_service_pb2.DeletePostRequest(id=next(victim_posts))),
            "DELETE",
        ),
        "DeleteUser": (
            lambda: users.DeleteUser(user_service_pb2.DeleteUserRequest(id=next(victims))),
            "DELETE",
        ),
    }
    for name, (call, statement) in calls.items():
        assert await round_trips(counter, call) == [statement], name

    assert await db.fetchval("SELECT count(*) FROM posts WHERE title = 'alone'") == 2
    assert await db.fetchval("SELECT title FROM posts WHERE id = $1", post) == "renamed"
    assert await db.fetchval("SELECT display_name FROM users WHERE id = $1", author) == "Ada"
    assert await db.fetchval("SELECT count(*) FROM users WHERE username LIKE 'victim%'") == 0
    assert await db.fetchval("SELECT count(*) FROM users WHERE username LIKE 'new%'") == 2


async def test_reads_are_one_round_trip_and_a_failed_update_explains_itself_in_a_second(
    counter: StatementCounter, users: UserStub, posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db, "author")
    post = await posts.CreatePost(new_post(author))
    get = lambda: users.GetUser(user_service_pb2.GetUserRequest(id=author))  # noqa: E731
    listed = lambda: posts.ListPosts(post_service_pb2.ListPostsRequest())  # noqa: E731
    assert await round_trips(counter, get) == ["SELECT"]
    assert await round_trips(counter, listed) == ["SELECT"]

    stale = resources_pb2.Post(id=post.id, title="late", etag=post.etag + "0")

    async def update_stale() -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await posts.UpdatePost(
                post_service_pb2.UpdatePostRequest(post=stale, update_mask=mask("title"))
            )
        assert caught.value.code() == grpc.StatusCode.ABORTED

    # The UPDATE matched nothing; a read tells a stale etag from a missing post.
    assert await round_trips(counter, update_stale) == ["WITH", "SELECT"]
    assert await db.fetchval("SELECT version FROM posts WHERE id = $1", post.id) == 1


async def test_statements_that_stand_or_fall_together_share_one_transaction(
    counter: StatementCounter, posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db, "author")
    batch = post_service_pb2.BatchCreatePostsRequest(requests=[new_post(author)] * 2)
    assert await round_trips(counter, lambda: posts.BatchCreatePosts(batch)) == [
        "BEGIN",
        "WITH",
        "COMMIT",
    ]
    request_ids = iter([str(uuid.uuid4()) for _ in range(2)])
    with_id = lambda: posts.CreatePost(new_post(author, request_id=next(request_ids)))  # noqa: E731
    # Claim the id, insert, remember what was created: three statements, one transaction.
    assert await round_trips(counter, with_id) == ["BEGIN", "WITH", "WITH", "UPDATE", "COMMIT"]


async def test_a_two_statement_call_that_fails_rolls_back_as_a_whole(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    """CreatePost with a request_id claims the id, then inserts: the author is missing, so the
    insert fails, and the claim made before it in the same call is gone too. A retry with
    the same id and a real author creates the post (the id was never used)."""
    request_id = str(uuid.uuid4())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await posts.CreatePost(new_post(999_999, request_id=request_id))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert await db.fetchval("SELECT count(*) FROM post_requests") == 0
    assert await db.fetchval("SELECT count(*) FROM posts") == 0
    author = await make_user(db, "author")
    created = await posts.CreatePost(new_post(author, request_id=request_id))
    assert created.author_id == author


async def test_a_write_with_little_time_left_runs_in_a_transaction(
    counter: StatementCounter, posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db, "author")
    short = ALONE_TIME_LEFT_SECONDS * 0.75
    call = lambda: posts.CreatePost(new_post(author), timeout=short)  # noqa: E731
    assert await round_trips(counter, call) == ["BEGIN", "WITH", "COMMIT"]
    roomy = lambda: posts.CreatePost(new_post(author), timeout=ALONE_TIME_LEFT_SECONDS * 2)  # noqa: E731
    assert await round_trips(counter, roomy) == ["WITH"]


async def test_a_statement_alone_that_waits_on_a_lock_runs_again_in_a_transaction_once(
    counter: StatementCounter, posts: PostStub, db: asyncpg.Connection, db_pool: asyncpg.Pool
) -> None:
    """The post's row is locked for longer than a statement alone may take: PostgreSQL cuts
    the UPDATE at ALONE_STATEMENT_SECONDS, having changed nothing, and the session runs it
    again in a transaction that waits for the lock as long as the call's deadline allows.
    The update is applied once (the version moves by one)."""
    author = await make_user(db, "author")
    post = await posts.CreatePost(new_post(author))
    update = post_service_pb2.UpdatePostRequest(
        post=resources_pb2.Post(id=post.id, title="after the lock", etag=post.etag),
        update_mask=mask("title"),
    )

    async def blocked_update() -> Any:
        async with row_locked(db_pool, "posts", post.id):
            call = asyncio.ensure_future(posts.UpdatePost(update, timeout=10))
            await asyncio.sleep(ALONE_STATEMENT_SECONDS * 2.5)
            assert await waiting_on_lock(db, 1) == 1  # the second try, waiting in its transaction
        return await call

    statements = first_words(await counter.count(blocked_update, transaction_control=True))
    assert statements == ["WITH", "BEGIN", "WITH", "COMMIT"], statements
    row = await db.fetchrow("SELECT title, version FROM posts WHERE id = $1", post.id)
    assert (row["title"], row["version"]) == ("after the lock", 2)


async def test_a_write_cut_by_its_deadline_never_commits_even_when_it_started_alone(
    posts: PostStub, db: asyncpg.Connection, db_pool: asyncpg.Pool
) -> None:
    """Deadlines just over ALONE_TIME_LEFT_SECONDS, so each write starts alone; the row is
    locked past them. Every call ends DEADLINE_EXCEEDED, and once the lock is gone nothing of
    theirs lands: neither the statement alone (cut by PostgreSQL early) nor its second try
    (cancelled with the call)."""
    author = await make_user(db, "author")
    post = await posts.CreatePost(new_post(author))
    deadline = ALONE_TIME_LEFT_SECONDS + 0.3
    codes = []
    async with row_locked(db_pool, "posts", post.id):
        calls = [
            posts.UpdatePost(
                post_service_pb2.UpdatePostRequest(
                    post=resources_pb2.Post(id=post.id, title=f"late {i}"),
                    update_mask=mask("title"),
                ),
                timeout=deadline,
            )
            for i in range(10)
        ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            codes.append(caught.value.code())
    await asyncio.sleep(0.3)  # anything left running would land now
    assert set(codes) == {grpc.StatusCode.DEADLINE_EXCEEDED}
    row = await db.fetchrow("SELECT title, version FROM posts WHERE id = $1", post.id)
    assert (row["title"], row["version"]) == ("t", 1)
