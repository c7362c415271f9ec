"""PostService CRUD through the real server: what a client sees, and the rows left behind."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest
from blog.v1 import post_service_pb2, resources_pb2
from google.protobuf import field_mask_pb2

from tests.support import failure, make_post, make_user

if TYPE_CHECKING:
    from blog.v1.post_service_pb2_grpc import PostServiceAsyncStub as PostStub


async def update(
    posts: PostStub, post: resources_pb2.Post, paths: list[str] | None = None
) -> resources_pb2.Post:
    request = post_service_pb2.UpdatePostRequest(post=post)
    if paths is not None:
        request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=paths))
    return await posts.UpdatePost(request)


# --- CreatePost --------------------------------------------------------------------------------


async def test_create_post_returns_post_with_author_etag_and_created_at(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db)
    post = await make_post(posts, author, "Hello", "World", published=True)

    assert post.id > 0
    assert (post.author_id, post.title, post.content, post.published) == (
        author,
        "Hello",
        "World",
        True,
    )
    assert post.etag
    assert post.HasField("created_at") and post.created_at.seconds > 0
    assert not post.HasField("updated_at")
    assert post.author.id == author
    assert post.author.username == "alice"
    assert post.author.email == "alice@example.com"
    assert post.author.is_active
    assert post.author.etag
    assert len(post.author.posts) == 0
    row = await db.fetchrow("SELECT author_id, title, content, published FROM posts")
    assert tuple(row) == (author, "Hello", "World", True)


async def test_create_post_for_unknown_author_is_not_found_and_creates_nothing(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    error = await failure(make_post(posts, 424242))

    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "USER_NOT_FOUND"
    assert error.domain == "blog.v1"
    assert "424242" in error.message
    assert await db.fetchval("SELECT count(*) FROM posts") == 0


# --- GetPost -----------------------------------------------------------------------------------


async def test_get_post_returns_the_stored_post_with_its_author(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db)
    created = await make_post(posts, author, "T", "C")

    got = await posts.GetPost(post_service_pb2.GetPostRequest(id=created.id))

    assert got == created
    assert got.author.username == "alice"


async def test_get_unknown_post_is_not_found_naming_the_id(posts: PostStub) -> None:
    error = await failure(posts.GetPost(post_service_pb2.GetPostRequest(id=987654)))

    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "POST_NOT_FOUND"
    assert error.domain == "blog.v1"
    assert "987654" in error.message
    assert "post" in error.message.lower()


# --- UpdatePost --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "changed"),
    [
        ("title", {"title": "New title"}),
        ("content", {"content": "New content"}),
        ("published", {"published": True}),
    ],
)
async def test_update_with_single_mask_path_changes_only_that_field(
    posts: PostStub, db: asyncpg.Connection, path: str, changed: dict[str, object]
) -> None:
    author = await make_user(db)
    created = await make_post(posts, author, "Old title", "Old content", published=False)
    sent = resources_pb2.Post(
        id=created.id, title="New title", content="New content", published=True
    )

    updated = await update(posts, sent, [path])

    expected = {"title": "Old title", "content": "Old content", "published": False, **changed}
    assert {k: getattr(updated, k) for k in expected} == expected
    row = await db.fetchrow("SELECT title, content, published FROM posts WHERE id = $1", created.id)
    assert dict(row) == expected


async def test_update_with_star_mask_replaces_every_updatable_field(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db)
    created = await make_post(posts, author, "Old", "Old content", published=True)

    # `*` also applies default values: published=False is written.
    updated = await update(
        posts, resources_pb2.Post(id=created.id, title="New", content="New content"), ["*"]
    )

    assert (updated.title, updated.content, updated.published) == ("New", "New content", False)
    row = await db.fetchrow("SELECT title, content, published FROM posts WHERE id = $1", created.id)
    assert tuple(row) == ("New", "New content", False)


async def test_update_without_mask_changes_only_populated_fields(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db)
    created = await make_post(posts, author, "Old", "Kept content", published=True)

    # content is empty and published is false (defaults): neither is touched.
    updated = await update(posts, resources_pb2.Post(id=created.id, title="New"))

    assert (updated.title, updated.content, updated.published) == ("New", "Kept content", True)
    row = await db.fetchrow("SELECT title, content, published FROM posts WHERE id = $1", created.id)
    assert tuple(row) == ("New", "Kept content", True)


@pytest.mark.parametrize("path", ["author_id", "id", "created_at", "updated_at", "etag", "nope"])
async def test_update_with_immutable_or_unknown_mask_path_is_invalid_argument(
    posts: PostStub, db: asyncpg.Connection, path: str
) -> None:
    author = await make_user(db)
    other = await make_user(db, "bob")
    created = await make_post(posts, author, "Old", "Old content")
    sent = resources_pb2.Post(id=created.id, author_id=other, title="New")

    error = await failure(update(posts, sent, [path]))

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.domain == "blog.v1"
    assert any(field.startswith("update_mask") for field in error.violations), error.violations
    row = await db.fetchrow("SELECT author_id, title, version FROM posts WHERE id = $1", created.id)
    assert tuple(row) == (author, "Old", 1)


async def test_update_sets_updated_at_and_changes_etag(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db)
    created = await make_post(posts, author)

    first = await update(posts, resources_pb2.Post(id=created.id, title="One"), ["title"])
    second = await update(posts, resources_pb2.Post(id=created.id, title="Two"), ["title"])

    assert first.HasField("updated_at")
    assert first.updated_at.ToDatetime() >= created.created_at.ToDatetime()
    assert second.updated_at.ToDatetime() >= first.updated_at.ToDatetime()
    assert len({created.etag, first.etag, second.etag}) == 3
    assert first.created_at == created.created_at
    assert first.author.id == author
    fetched = await posts.GetPost(post_service_pb2.GetPostRequest(id=created.id))
    assert fetched.etag == second.etag and fetched.updated_at == second.updated_at
    assert await db.fetchval("SELECT updated_at IS NOT NULL FROM posts") is True


async def test_update_with_current_etag_applies(posts: PostStub, db: asyncpg.Connection) -> None:
    author = await make_user(db)
    created = await make_post(posts, author, "Old")

    updated = await update(
        posts, resources_pb2.Post(id=created.id, title="New", etag=created.etag), ["title"]
    )

    assert updated.title == "New"
    assert updated.etag != created.etag


async def test_update_with_stale_etag_is_aborted_and_changes_nothing(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db)
    created = await make_post(posts, author, "Old")
    current = await update(posts, resources_pb2.Post(id=created.id, title="Newer"), ["title"])
    before = dict(await db.fetchrow("SELECT * FROM posts WHERE id = $1", created.id))

    error = await failure(
        update(posts, resources_pb2.Post(id=created.id, title="Lost", etag=created.etag), ["title"])
    )

    assert error.code == grpc.StatusCode.ABORTED
    assert error.reason == "STALE_ETAG"
    assert error.domain == "blog.v1"
    after = dict(await db.fetchrow("SELECT * FROM posts WHERE id = $1", created.id))
    assert after == before
    fetched = await posts.GetPost(post_service_pb2.GetPostRequest(id=created.id))
    assert (fetched.title, fetched.etag) == ("Newer", current.etag)


async def test_update_unknown_post_is_not_found(posts: PostStub) -> None:
    error = await failure(update(posts, resources_pb2.Post(id=55555, title="x"), ["title"]))

    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "POST_NOT_FOUND"
    assert "55555" in error.message


async def test_update_with_blank_title_is_invalid_argument_naming_post_title(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db)
    created = await make_post(posts, author, "Old")

    error = await failure(update(posts, resources_pb2.Post(id=created.id, title="   "), ["title"]))

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "post.title" in error.violations
    assert await db.fetchval("SELECT title FROM posts") == "Old"


# --- DeletePost --------------------------------------------------------------------------------


async def test_delete_post_removes_the_row_and_get_is_then_not_found(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    author = await make_user(db)
    doomed = await make_post(posts, author, "doomed")
    kept = await make_post(posts, author, "kept")

    await posts.DeletePost(post_service_pb2.DeletePostRequest(id=doomed.id))

    assert await db.fetchval("SELECT array_agg(id) FROM posts") == [kept.id]
    error = await failure(posts.GetPost(post_service_pb2.GetPostRequest(id=doomed.id)))
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert await db.fetchval("SELECT count(*) FROM users") == 1


async def test_delete_unknown_post_is_not_found_naming_the_id(posts: PostStub) -> None:
    error = await failure(posts.DeletePost(post_service_pb2.DeletePostRequest(id=31337)))

    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "POST_NOT_FOUND"
    assert "31337" in error.message


# --- ListPosts ---------------------------------------------------------------------------------


async def test_list_posts_fills_the_author_of_every_post(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    authors = {await make_user(db, name): name for name in ("alice", "bob", "carol")}
    for author_id in authors:
        for n in range(3):
            await make_post(posts, author_id, f"post {n}")

    listed = await posts.ListPosts(post_service_pb2.ListPostsRequest(page_size=100))

    assert len(listed.posts) == 9
    for post in listed.posts:
        assert post.author.id == post.author_id
        assert post.author.username == authors[post.author_id]
        assert post.author.email == f"{authors[post.author_id]}@example.com"
        assert len(post.author.posts) == 0


async def test_list_posts_is_newest_first(posts: PostStub, db: asyncpg.Connection) -> None:
    author = await make_user(db)
    await db.execute(
        "INSERT INTO posts (author_id, title, content, created_at)"
        " SELECT $1, 'p' || n, 'c', now() - n * interval '1 minute'"
        " FROM generate_series(1, 5) AS n",
        author,
    )

    listed = await posts.ListPosts(post_service_pb2.ListPostsRequest())

    assert [p.title for p in listed.posts] == ["p1", "p2", "p3", "p4", "p5"]
