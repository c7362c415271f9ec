"""No N+1, proven by counting the SQL statements each call sends.

Two independent counters:

* `StatementCounter` (primary, works on any PostgreSQL): an asyncpg query logger on every
  connection the server checks out sees every statement sent on it (all of the service's SQL
  runs on the driver connection). Transaction control (BEGIN/COMMIT/ROLLBACK) and the health
  probe's `SELECT 1` are not counted: they are not the queries N+1 is about.
* pg_stat_statements (secondary): PostgreSQL's own count of the statements on the service's
  tables. It sees every session of the database, so it leaves out what is not about them: the
  health probe's transaction (`BEGIN ...; SET LOCAL ...; SELECT 1; COMMIT`, once a second,
  which a call may overlap) and a new connection's type introspection. Needs the library
  preloaded, which the embedded test server does; skipped on a server without it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
from blog.v1 import (
    post_service_pb2,
    resources_pb2,
    user_service_pb2,
)

from tests.support import make_user
from tests.support.statements import StatementCounter

if TYPE_CHECKING:
    from blog.v1.post_service_pb2_grpc import PostServiceAsyncStub as PostStub
    from blog.v1.user_service_pb2_grpc import UserServiceAsyncStub as UserStub


async def insert_posts(db: asyncpg.Connection, author_id: int, count: int) -> None:
    """`count` posts by one author; post n is n minutes old (p1 newest)."""
    await db.execute(
        "INSERT INTO posts (author_id, title, content, created_at)"
        " SELECT $1, 'p' || n, 'c', now() - n * interval '1 minute'"
        " FROM generate_series(1, $2) AS n",
        author_id,
        count,
    )


async def posts_by_many_authors(db: asyncpg.Connection, count: int) -> None:
    """`count` posts, each by a different author: the worst case for N+1 on authors."""
    await db.execute(
        "WITH u AS (INSERT INTO users (email, username, hashed_password)"
        "   SELECT 'a' || n || '@example.com', 'a' || n, 'x' FROM generate_series(1, $1) AS n"
        "   RETURNING id)"
        " INSERT INTO posts (author_id, title, content) SELECT id, 't', 'c' FROM u",
        count,
    )


def get_user(users: UserStub, user_id: int, view: int) -> Callable[[], Awaitable[Any]]:
    async def call() -> resources_pb2.User:
        return await users.GetUser(user_service_pb2.GetUserRequest(id=user_id, view=view))  # type: ignore[arg-type]

    return call


def list_posts(posts: PostStub, page_size: int) -> Callable[[], Awaitable[Any]]:
    async def call() -> post_service_pb2.ListPostsResponse:
        response = await posts.ListPosts(post_service_pb2.ListPostsRequest(page_size=page_size))
        assert len(response.posts) == page_size
        assert all(p.author.id == p.author_id and p.author.username for p in response.posts)
        return response

    return call


# --- event/driver based (any PostgreSQL) -------------------------------------------------------


async def test_counter_sees_the_statements_of_a_read_call(
    counter: StatementCounter, users: UserStub, db: asyncpg.Connection
) -> None:
    """The counter itself works: a GetUser is at least one statement, naming the users table."""
    user = await make_user(db, "alice")

    statements = await counter.count(get_user(users, user, resources_pb2.USER_VIEW_BASIC))

    assert len(statements) >= 1
    assert any("users" in s for s in statements), statements


async def test_counter_sees_the_statements_of_a_write_call(
    counter: StatementCounter, posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db, "alice")

    async def create() -> None:
        await posts.CreatePost(
            post_service_pb2.CreatePostRequest(author_id=author, title="t", content="c")
        )

    statements = await counter.count(create)

    assert any("INSERT INTO posts" in s for s in statements), statements


async def test_list_posts_statement_count_does_not_grow_with_page_size(
    counter: StatementCounter, posts: PostStub, db: asyncpg.Connection
) -> None:
    await posts_by_many_authors(db, 120)
    await list_posts(posts, 5)()  # warm-up: connections opened, statements prepared

    small = await counter.count(list_posts(posts, 5))
    large = await counter.count(list_posts(posts, 100))

    assert len(small) >= 1
    assert len(large) == len(small), (small, large)


async def test_list_posts_is_a_single_statement(
    counter: StatementCounter, posts: PostStub, db: asyncpg.Connection
) -> None:
    await posts_by_many_authors(db, 10)
    await list_posts(posts, 10)()

    statements = await counter.count(list_posts(posts, 10))

    assert len(statements) == 1, statements


async def test_get_user_with_posts_costs_the_same_for_1_and_200_posts(
    counter: StatementCounter, users: UserStub, db: asyncpg.Connection
) -> None:
    few = await make_user(db, "few")
    many = await make_user(db, "many")
    await insert_posts(db, few, 1)
    await insert_posts(db, many, 200)
    await get_user(users, few, resources_pb2.USER_VIEW_WITH_POSTS)()  # warm-up

    one = await counter.count(get_user(users, few, resources_pb2.USER_VIEW_WITH_POSTS))
    two_hundred = await counter.count(get_user(users, many, resources_pb2.USER_VIEW_WITH_POSTS))

    assert len(one) >= 1
    assert len(two_hundred) == len(one), (one, two_hundred)


async def test_get_user_with_posts_is_one_statement_like_basic(
    counter: StatementCounter, users: UserStub, db: asyncpg.Connection
) -> None:
    user = await make_user(db, "alice")
    await insert_posts(db, user, 50)
    await get_user(users, user, resources_pb2.USER_VIEW_WITH_POSTS)()  # warm-up

    basic = await counter.count(get_user(users, user, resources_pb2.USER_VIEW_BASIC))
    with_posts = await counter.count(get_user(users, user, resources_pb2.USER_VIEW_WITH_POSTS))

    # One statement reads the user and the posts: one snapshot, even without a transaction.
    assert len(with_posts) == len(basic) == 1, (basic, with_posts)


async def test_get_user_with_posts_returns_the_100_newest_posts_newest_first(
    users: UserStub, db: asyncpg.Connection
) -> None:
    user = await make_user(db, "alice")
    other = await make_user(db, "bob")
    await insert_posts(db, user, 200)
    await insert_posts(db, other, 3)
    # Same timestamp as p1 but a higher id: newest first puts it first.
    await db.execute(
        "INSERT INTO posts (author_id, title, content, created_at)"
        " SELECT $1, 'tie', 'c', created_at FROM posts WHERE title = 'p1' AND author_id = $1",
        user,
    )

    found = await users.GetUser(
        user_service_pb2.GetUserRequest(id=user, view=resources_pb2.USER_VIEW_WITH_POSTS)
    )

    assert [p.title for p in found.posts] == ["tie", *(f"p{n}" for n in range(1, 100))]
    assert all(p.author_id == user for p in found.posts)


@pytest.mark.parametrize(
    "view", [resources_pb2.USER_VIEW_BASIC, resources_pb2.USER_VIEW_UNSPECIFIED]
)
async def test_get_user_without_with_posts_view_returns_no_posts(
    users: UserStub, db: asyncpg.Connection, view: int
) -> None:
    user = await make_user(db, "alice")
    await insert_posts(db, user, 3)

    found = await users.GetUser(user_service_pb2.GetUserRequest(id=user, view=view))  # type: ignore[arg-type]

    assert found.id == user and len(found.posts) == 0


# --- pg_stat_statements (PostgreSQL's own count) -----------------------------------------------


@pytest.fixture
async def pg_statements(
    db: asyncpg.Connection,
) -> Callable[[Callable[[], Awaitable[Any]]], Awaitable[int]]:
    preloaded = await db.fetchval("SHOW shared_preload_libraries")
    if "pg_stat_statements" not in preloaded:
        pytest.skip(
            "pg_stat_statements is not in shared_preload_libraries on this server "
            "(the embedded test server preloads it; run without TEST_DATABASE_URL)"
        )
    await db.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")

    async def count(call: Callable[[], Awaitable[Any]]) -> int:
        await db.execute("SELECT pg_stat_statements_reset()")
        await call()
        calls = await db.fetchval(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements"
            " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            "   AND query ~* '\\m(users|posts|post_requests)\\M'"
            "   AND query NOT LIKE '%pg_stat_statements%'"
        )
        return int(calls)

    return count


async def test_pg_stat_statements_list_posts_page_size_5_and_100_cost_the_same(
    pg_statements: Callable[[Callable[[], Awaitable[Any]]], Awaitable[int]],
    posts: PostStub,
    db: asyncpg.Connection,
) -> None:
    await posts_by_many_authors(db, 120)
    await list_posts(posts, 5)()

    small = await pg_statements(list_posts(posts, 5))
    large = await pg_statements(list_posts(posts, 100))

    assert small >= 1
    assert large == small


async def test_pg_stat_statements_get_user_with_1_and_200_posts_cost_the_same(
    pg_statements: Callable[[Callable[[], Awaitable[Any]]], Awaitable[int]],
    users: UserStub,
    db: asyncpg.Connection,
) -> None:
    few = await make_user(db, "few")
    many = await make_user(db, "many")
    await insert_posts(db, few, 1)
    await insert_posts(db, many, 200)
    await get_user(users, few, resources_pb2.USER_VIEW_WITH_POSTS)()

    basic = await pg_statements(get_user(users, few, resources_pb2.USER_VIEW_BASIC))
    one = await pg_statements(get_user(users, few, resources_pb2.USER_VIEW_WITH_POSTS))
    two_hundred = await pg_statements(get_user(users, many, resources_pb2.USER_VIEW_WITH_POSTS))

    assert basic >= 1
    assert one == basic
    assert two_hundred == one
