"""BatchCreatePosts (1..1000, all or nothing) and StreamPosts (every match, oldest first)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest
from blog.v1 import post_service_pb2, resources_pb2

from service.server import Server
from tests.support import RichError, failure, make_user, settled_checked_out

if TYPE_CHECKING:
    from blog.v1.post_service_pb2_grpc import PostServiceAsyncStub as PostStub

Item = post_service_pb2.CreatePostRequest


async def batch_failure(posts: PostStub, items: list[Item]) -> RichError:
    return await failure(
        posts.BatchCreatePosts(post_service_pb2.BatchCreatePostsRequest(requests=items))
    )


async def insert_posts(
    db: asyncpg.Connection, author_id: int, count: int, *, published: bool | None = None
) -> None:
    """`count` posts, created one second apart in id order (oldest = lowest id)."""
    await db.execute(
        "INSERT INTO posts (author_id, title, content, published, created_at)"
        " SELECT $1, 'p' || n, 'c', coalesce($3, n % 2 = 0),"
        "        timestamptz '2020-01-01' + n * interval '1 second'"
        " FROM generate_series(1, $2) AS n",
        author_id,
        count,
        published,
    )


async def stream_all(posts: PostStub, **filters: object) -> list[resources_pb2.Post]:
    request = post_service_pb2.StreamPostsRequest(**filters)  # type: ignore[arg-type]
    return [post async for post in posts.StreamPosts(request)]


async def idle_in_transaction(db: asyncpg.Connection) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        "   AND state LIKE 'idle in transaction%'"
    )
    return count


# --- BatchCreatePosts --------------------------------------------------------------------------


async def test_batch_of_one_creates_one_post_with_its_author(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db, "alice")

    response = await posts.BatchCreatePosts(
        post_service_pb2.BatchCreatePostsRequest(
            requests=[Item(author_id=author, title="only", content="c", published=True)]
        )
    )

    assert len(response.posts) == 1
    (post,) = response.posts
    assert (post.title, post.content, post.published, post.author_id) == ("only", "c", True, author)
    assert post.author.username == "alice" and post.etag and post.HasField("created_at")
    assert await db.fetchval("SELECT count(*) FROM posts") == 1


async def test_batch_of_1000_creates_every_post_with_its_author(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    authors = [await make_user(db, name) for name in ("alice", "bob", "carol")]
    names = {authors[0]: "alice", authors[1]: "bob", authors[2]: "carol"}
    items = [
        Item(author_id=authors[i % 3], title=f"t{i:04d}", content=f"c{i}") for i in range(1000)
    ]

    response = await posts.BatchCreatePosts(
        post_service_pb2.BatchCreatePostsRequest(requests=items)
    )

    assert sorted((p.title, p.content, p.author_id) for p in response.posts) == sorted(
        (i.title, i.content, i.author_id) for i in items
    )
    ids = [p.id for p in response.posts]
    assert ids == sorted(ids) and len(set(ids)) == 1000
    assert all(p.etag and p.HasField("created_at") for p in response.posts)
    assert all(p.author.id == p.author_id for p in response.posts)
    assert all(p.author.username == names[p.author_id] for p in response.posts)
    rows = await db.fetch("SELECT id, title, author_id FROM posts ORDER BY id")
    assert [tuple(r) for r in rows] == [(p.id, p.title, p.author_id) for p in response.posts]


async def warm_up_batch_statement(posts: PostStub, db: asyncpg.Connection, author: int) -> None:
    """Runs the batch INSERT often enough that every pooled writer connection has it prepared
    past PostgreSQL's five custom plans (it may then switch to a generic plan), as in any
    long-running server; then removes the warm-up rows."""
    for _ in range(15):
        await posts.BatchCreatePosts(
            post_service_pb2.BatchCreatePostsRequest(
                requests=[Item(author_id=author, title="warm-up", content="c")]
            )
        )
    await db.execute("DELETE FROM posts")


async def test_batch_returns_posts_in_request_order_on_a_warm_server(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    authors = [await make_user(db, name) for name in ("alice", "bob", "carol")]
    await warm_up_batch_statement(posts, db, authors[0])
    items = [Item(author_id=authors[i % 3], title=f"t{i:04d}", content="c") for i in range(1000)]

    response = await posts.BatchCreatePosts(
        post_service_pb2.BatchCreatePostsRequest(requests=items)
    )

    assert [(p.title, p.author_id) for p in response.posts] == [
        (i.title, i.author_id) for i in items
    ]
    ids = [p.id for p in response.posts]
    assert ids == sorted(ids)


@pytest.mark.parametrize("count", [0, 1001])
async def test_batch_outside_1_to_1000_is_invalid_argument_on_requests(
    posts: PostStub, db: asyncpg.Connection, count: int
) -> None:
    author = await make_user(db, "alice")
    items = [Item(author_id=author, title="t", content="c") for _ in range(count)]

    error = await batch_failure(posts, items)

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.domain == "blog.v1"
    assert "requests" in error.violations, error.violations
    assert await db.fetchval("SELECT count(*) FROM posts") == 0


async def test_batch_with_bad_items_names_each_bad_field_and_creates_nothing(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db, "alice")
    items = [Item(author_id=author, title=f"ok {i}", content="c") for i in range(10)]
    items[2].title = "   "
    items[5].content = ""
    items[7].author_id = 0
    items[8].title = "x" * 201

    error = await batch_failure(posts, items)

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.domain == "blog.v1"
    assert set(error.violations) == {
        "requests[2].title",
        "requests[5].content",
        "requests[7].author_id",
        "requests[8].title",
    }
    assert await db.fetchval("SELECT count(*) FROM posts") == 0


async def test_batch_with_an_unknown_author_among_valid_ones_is_not_found_and_creates_nothing(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db, "alice")
    items = [Item(author_id=author, title=f"t{i}", content="c") for i in range(5)]
    items[3].author_id = 777777

    error = await batch_failure(posts, items)

    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "USER_NOT_FOUND"
    assert "777777" in error.message
    assert await db.fetchval("SELECT count(*) FROM posts") == 0


# --- StreamPosts -------------------------------------------------------------------------------


async def test_stream_returns_every_post_oldest_first_with_authors(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db, "alice")
    await insert_posts(db, author, 5)
    # A post created earlier than all the others, but with the highest id.
    await db.execute(
        "INSERT INTO posts (author_id, title, content, created_at)"
        " VALUES ($1, 'oldest', 'c', '2019-01-01')",
        author,
    )

    streamed = await stream_all(posts)

    assert [p.title for p in streamed] == ["oldest", "p1", "p2", "p3", "p4", "p5"]
    assert all(p.author.username == "alice" for p in streamed)


async def test_stream_orders_equal_timestamps_by_id(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db, "alice")
    await db.execute(
        "INSERT INTO posts (author_id, title, content, created_at)"
        " SELECT $1, 'p' || n, 'c', '2020-01-01' FROM generate_series(1, 20) AS n",
        author,
    )

    ids = [p.id for p in await stream_all(posts)]

    assert ids == sorted(ids) and len(ids) == 20


async def test_stream_delivers_every_one_of_3000_rows(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db, "alice")
    await insert_posts(db, author, 3000)

    streamed = await stream_all(posts)

    assert [p.title for p in streamed] == [f"p{n}" for n in range(1, 3001)]
    expected_ids = [r["id"] for r in await db.fetch("SELECT id FROM posts ORDER BY id")]
    assert [p.id for p in streamed] == expected_ids


async def test_stream_filters_by_author(posts: PostStub, db: asyncpg.Connection) -> None:
    alice = await make_user(db, "alice")
    bob = await make_user(db, "bob")
    await insert_posts(db, alice, 4)
    await insert_posts(db, bob, 3)

    streamed = await stream_all(posts, author_id=bob)

    assert len(streamed) == 3
    assert {p.author_id for p in streamed} == {bob}
    assert {p.author.username for p in streamed} == {"bob"}


@pytest.mark.parametrize("published", [True, False])
async def test_stream_filters_by_published(
    posts: PostStub, db: asyncpg.Connection, published: bool
) -> None:
    author = await make_user(db, "alice")
    await insert_posts(db, author, 10)  # even n published

    streamed = await stream_all(posts, published=published)

    expected = [f"p{n}" for n in range(1, 11) if (n % 2 == 0) == published]
    assert [p.title for p in streamed] == expected


async def test_stream_combines_author_and_published_filters(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    alice = await make_user(db, "alice")
    bob = await make_user(db, "bob")
    await insert_posts(db, alice, 6)
    await insert_posts(db, bob, 6)

    streamed = await stream_all(posts, author_id=alice, published=True)

    assert [(p.author_id, p.title) for p in streamed] == [(alice, f"p{n}") for n in (2, 4, 6)]


async def test_stream_with_no_match_ends_empty_and_ok(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db, "alice")
    await insert_posts(db, author, 3)

    assert await stream_all(posts, author_id=author + 1000) == []


async def test_cancelled_stream_releases_its_connection_and_transaction(
    server: Server, posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db, "alice")
    await insert_posts(db, author, 3000)

    call = posts.StreamPosts(post_service_pb2.StreamPostsRequest())
    received = 0
    async for _ in call:
        received += 1
        if received == 10:
            break
    # Mid-stream the server holds a connection: the checks below could fail.
    assert server.database.reader.pool.checkedout() == 1  # type: ignore[attr-defined]

    call.cancel()

    assert await settled_checked_out(server) == 0
    assert await idle_in_transaction(db) == 0
    # The server still serves streams afterwards.
    assert len(await stream_all(posts)) == 3000


async def test_slow_reader_still_gets_every_row(posts: PostStub, db: asyncpg.Connection) -> None:
    author = await make_user(db, "alice")
    await insert_posts(db, author, 2000)

    titles: list[str] = []
    async for post in posts.StreamPosts(post_service_pb2.StreamPostsRequest()):
        titles.append(post.title)
        if len(titles) % 400 == 1:
            await asyncio.sleep(0.3)  # well past any batch the server fetches at once
        elif len(titles) % 50 == 0:
            await asyncio.sleep(0.005)

    assert titles == [f"p{n}" for n in range(1, 2001)]


async def test_stream_with_invalid_author_id_is_invalid_argument(posts: PostStub) -> None:
    error = await failure(stream_all(posts, author_id=-1))

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "author_id" in error.violations
