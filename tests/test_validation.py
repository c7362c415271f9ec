"""SPEC's validation rules for every field, through the real server.

Every refused request is INVALID_ARGUMENT with one BadRequest naming every bad field, and
leaves the database exactly as it was.
"""

from __future__ import annotations

import typing
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import pytest
from blog.v1 import (
    post_service_pb2,
    resources_pb2,
    user_service_pb2,
)
from google.protobuf import field_mask_pb2

from service.domain import validation
from service.domain.entities import PostRecord, UserRecord, settable
from tests.support import failure, make_user

if TYPE_CHECKING:
    from blog.v1.post_service_pb2_grpc import PostServiceAsyncStub as PostStub
    from blog.v1.user_service_pb2_grpc import UserServiceAsyncStub as UserStub

# conftest's autouse `empty_tables` fetches db_pool lazily, which fails inside the running loop
# unless the session-scoped pool is already part of the test's fixture closure.
pytestmark = pytest.mark.usefixtures("db_pool")

PASSWORD = "a fine password"
E_ACUTE = "é"  # 2 bytes in UTF-8
EMOJI = "\U0001f600"  # 4 bytes in UTF-8


def email_of_length(length: int, local_char: str = E_ACUTE) -> str:
    """A plausible address of exactly `length` characters (a 64-char local part of `local_char`)."""
    local = local_char * 64
    remaining = length - len(local) - 1 - len("com")
    labels: list[str] = []
    while remaining > 0:
        take = min(64, remaining)  # a label of up to 63 characters and its dot
        if remaining - take == 1:
            take -= 1
        labels.append("a" * (take - 1))
        remaining -= take
    address = f"{local}@{'.'.join(labels)}{'.' if labels else ''}com"
    assert len(address) == length
    return address


async def counts(db: asyncpg.Connection) -> tuple[int, int]:
    return (
        await db.fetchval("SELECT count(*) FROM users"),
        await db.fetchval("SELECT count(*) FROM posts"),
    )


async def refused(call: Awaitable[Any], db: asyncpg.Connection) -> dict[str, str]:
    """Awaits a call that must be INVALID_ARGUMENT and change no row; returns its violations."""
    before = await counts(db)
    error = await failure(call)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error.message
    assert error.domain == "blog.v1" and error.reason
    assert error.violations, "INVALID_ARGUMENT without a BadRequest field violation"
    assert await counts(db) == before
    return error.violations


def create_user_request(**fields: Any) -> user_service_pb2.CreateUserRequest:
    values: dict[str, Any] = {
        "email": "valid@example.com",
        "username": "valid_user",
        "password": PASSWORD,
    }
    values.update(fields)
    return user_service_pb2.CreateUserRequest(**values)


def create_post_request(author_id: int, **fields: Any) -> post_service_pb2.CreatePostRequest:
    values: dict[str, Any] = {"author_id": author_id, "title": "Title", "content": "Content"}
    values.update(fields)
    return post_service_pb2.CreatePostRequest(**values)


@pytest.fixture
async def author(db: asyncpg.Connection) -> AsyncIterator[int]:
    yield await make_user(db, "author")


@pytest.fixture
async def post_id(db: asyncpg.Connection, author: int) -> AsyncIterator[int]:
    new_id: int = await db.fetchval(
        "INSERT INTO posts (author_id, title, content) VALUES ($1, 'T', 'C') RETURNING id", author
    )
    yield new_id


# --- username -----------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [3, 100])
async def test_username_at_length_limits_is_accepted(users: UserStub, length: int) -> None:
    name = ("ab_.-9" * 20)[:length]
    user = await users.CreateUser(create_user_request(username=name))
    assert user.username == name


@pytest.mark.parametrize("length", [0, 2, 101])
async def test_username_outside_length_limits_is_refused(
    users: UserStub, db: asyncpg.Connection, length: int
) -> None:
    violations = await refused(users.CreateUser(create_user_request(username="u" * length)), db)
    assert set(violations) == {"username"}


@pytest.mark.parametrize("name", ["has space", "al!ce", "name@host", E_ACUTE * 5, "tab\tname"])
async def test_username_with_characters_outside_the_allowed_set_is_refused(
    users: UserStub, db: asyncpg.Connection, name: str
) -> None:
    violations = await refused(users.CreateUser(create_user_request(username=name)), db)
    assert set(violations) == {"username"}


# --- password -----------------------------------------------------------------------------------


@pytest.mark.parametrize("password", ["p" * 8, "p" * 1024, E_ACUTE * 1024, EMOJI * 1024, EMOJI * 8])
async def test_password_within_limits_in_characters_is_accepted(
    users: UserStub, password: str
) -> None:
    user = await users.CreateUser(create_user_request(password=password))
    authenticated = await users.AuthenticateUser(
        user_service_pb2.AuthenticateUserRequest(login="valid_user", password=password)
    )
    assert authenticated.id == user.id


@pytest.mark.parametrize("password", ["", "p" * 7, EMOJI * 7, "p" * 1025, E_ACUTE * 1025])
async def test_password_outside_limits_is_refused(
    users: UserStub, db: asyncpg.Connection, password: str
) -> None:
    violations = await refused(users.CreateUser(create_user_request(password=password)), db)
    assert set(violations) == {"password"}


async def test_change_password_too_short_is_refused_naming_new_password(
    users: UserStub, db: asyncpg.Connection, author: int
) -> None:
    before = await db.fetchval("SELECT hashed_password FROM users WHERE id = $1", author)
    violations = await refused(
        users.ChangePassword(
            user_service_pb2.ChangePasswordRequest(id=author, new_password="short")
        ),
        db,
    )
    assert set(violations) == {"new_password"}
    assert await db.fetchval("SELECT hashed_password FROM users WHERE id = $1", author) == before


# --- email --------------------------------------------------------------------------------------


@pytest.mark.parametrize("local_char", ["a", E_ACUTE])
async def test_email_of_255_characters_is_accepted_even_when_longer_in_bytes(
    users: UserStub, db: asyncpg.Connection, local_char: str
) -> None:
    email = email_of_length(255, local_char)
    user = await users.CreateUser(create_user_request(email=email))
    assert user.email == email
    assert await db.fetchval("SELECT email FROM users WHERE id = $1", user.id) == email


async def test_email_of_256_characters_is_refused(users: UserStub, db: asyncpg.Connection) -> None:
    violations = await refused(
        users.CreateUser(create_user_request(email=email_of_length(256, "a"))), db
    )
    assert set(violations) == {"email"}


@pytest.mark.parametrize(
    "email", ["", "plain", "@example.com", "a@", "a b@example.com", "a@@example.com", "a@b"]
)
async def test_implausible_email_is_refused(
    users: UserStub, db: asyncpg.Connection, email: str
) -> None:
    violations = await refused(users.CreateUser(create_user_request(email=email)), db)
    assert set(violations) == {"email"}


# --- NUL ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("email", "nul\x00@example.com"),
        ("username", "nul\x00name"),
        ("password", "password\x00here"),
    ],
)
async def test_nul_in_create_user_field_is_refused(
    users: UserStub, db: asyncpg.Connection, field: str, value: str
) -> None:
    violations = await refused(users.CreateUser(create_user_request(**{field: value})), db)
    assert set(violations) == {field}


@pytest.mark.parametrize(("field", "value"), [("title", "ti\x00tle"), ("content", "con\x00tent")])
async def test_nul_in_create_post_field_is_refused(
    posts: PostStub, db: asyncpg.Connection, author: int, field: str, value: str
) -> None:
    violations = await refused(posts.CreatePost(create_post_request(author, **{field: value})), db)
    assert set(violations) == {field}


async def test_nul_in_every_other_string_field_is_refused(
    users: UserStub, posts: PostStub, db: asyncpg.Connection, author: int, post_id: int
) -> None:
    nul = "x\x00y"
    cases: list[tuple[Awaitable[Any], str]] = [
        (users.GetUserByEmail(user_service_pb2.GetUserByEmailRequest(email=nul)), "email"),
        (
            users.AuthenticateUser(
                user_service_pb2.AuthenticateUserRequest(login=nul, password=PASSWORD)
            ),
            "login",
        ),
        (
            users.AuthenticateUser(
                user_service_pb2.AuthenticateUserRequest(login="author", password="pass\x00word")
            ),
            "password",
        ),
        (
            users.ChangePassword(
                user_service_pb2.ChangePasswordRequest(id=author, new_password="pass\x00word")
            ),
            "new_password",
        ),
        (users.ListUsers(user_service_pb2.ListUsersRequest(query=nul)), "query"),
        (posts.ListPosts(post_service_pb2.ListPostsRequest(query=nul)), "query"),
        (
            users.UpdateUser(
                user_service_pb2.UpdateUserRequest(
                    user=resources_pb2.User(id=author, username=nul),
                    update_mask=field_mask_pb2.FieldMask(paths=["username"]),
                )
            ),
            "user.username",
        ),
        (
            users.UpdateUser(
                user_service_pb2.UpdateUserRequest(
                    user=resources_pb2.User(id=author, username="fine", etag=nul),
                    update_mask=field_mask_pb2.FieldMask(paths=["username"]),
                )
            ),
            "user.etag",
        ),
        (
            posts.UpdatePost(
                post_service_pb2.UpdatePostRequest(
                    post=resources_pb2.Post(id=post_id, title=nul, content=nul),
                    update_mask=field_mask_pb2.FieldMask(paths=["title"]),
                )
            ),
            "post.title",
        ),
        (
            posts.UpdatePost(
                post_service_pb2.UpdatePostRequest(
                    post=resources_pb2.Post(id=post_id, content=nul),
                    update_mask=field_mask_pb2.FieldMask(paths=["content"]),
                )
            ),
            "post.content",
        ),
    ]
    for call, field in cases:
        violations = await refused(call, db)
        assert field in violations, (field, violations)


# --- title and content --------------------------------------------------------------------------


@pytest.mark.parametrize("title", ["t", "t" * 200, E_ACUTE * 200, EMOJI * 200])
async def test_title_within_limits_in_characters_is_accepted(
    posts: PostStub, author: int, title: str
) -> None:
    post = await posts.CreatePost(create_post_request(author, title=title))
    assert post.title == title


@pytest.mark.parametrize("title", ["", "   ", "\t\n ", "t" * 201, E_ACUTE * 201])
async def test_empty_blank_or_long_title_is_refused(
    posts: PostStub, db: asyncpg.Connection, author: int, title: str
) -> None:
    violations = await refused(posts.CreatePost(create_post_request(author, title=title)), db)
    assert set(violations) == {"title"}


@pytest.mark.parametrize("content", ["c", "c" * 100_000, E_ACUTE * 100_000, EMOJI * 100_000])
async def test_content_within_limits_in_characters_is_accepted(
    posts: PostStub, db: asyncpg.Connection, author: int, content: str
) -> None:
    post = await posts.CreatePost(create_post_request(author, content=content))
    assert post.content == content
    assert await db.fetchval("SELECT length(content) FROM posts WHERE id = $1", post.id) == len(
        content
    )


@pytest.mark.parametrize("content", ["", "c" * 100_001, EMOJI * 100_001])
async def test_empty_or_long_content_is_refused(
    posts: PostStub, db: asyncpg.Connection, author: int, content: str
) -> None:
    violations = await refused(posts.CreatePost(create_post_request(author, content=content)), db)
    assert set(violations) == {"content"}


async def test_update_post_with_too_long_title_is_refused_and_row_unchanged(
    posts: PostStub, db: asyncpg.Connection, post_id: int
) -> None:
    before = dict(await db.fetchrow("SELECT * FROM posts WHERE id = $1", post_id) or {})
    violations = await refused(
        posts.UpdatePost(
            post_service_pb2.UpdatePostRequest(
                post=resources_pb2.Post(id=post_id, title="t" * 201, content=""),
                update_mask=field_mask_pb2.FieldMask(paths=["title", "content"]),
            )
        ),
        db,
    )
    assert set(violations) == {"post.title", "post.content"}
    assert dict(await db.fetchrow("SELECT * FROM posts WHERE id = $1", post_id) or {}) == before


# --- every violation together -------------------------------------------------------------------


async def test_create_user_reports_every_bad_field_together(
    users: UserStub, db: asyncpg.Connection
) -> None:
    violations = await refused(
        users.CreateUser(
            user_service_pb2.CreateUserRequest(email="not-an-email", username="x", password="short")
        ),
        db,
    )
    assert set(violations) == {"email", "username", "password"}
    assert all(violations.values()), "every violation needs a description"


async def test_update_user_reports_every_bad_field_with_user_prefix(
    users: UserStub, db: asyncpg.Connection, author: int
) -> None:
    before = dict(await db.fetchrow("SELECT * FROM users WHERE id = $1", author) or {})
    violations = await refused(
        users.UpdateUser(
            user_service_pb2.UpdateUserRequest(
                user=resources_pb2.User(id=author, email="bad", username="!"),
                update_mask=field_mask_pb2.FieldMask(paths=["email", "username", "created_at"]),
            )
        ),
        db,
    )
    assert {"user.email", "user.username", "update_mask.paths[2]"} <= set(violations)
    assert dict(await db.fetchrow("SELECT * FROM users WHERE id = $1", author) or {}) == before


async def test_create_post_reports_every_bad_field_together(
    posts: PostStub, db: asyncpg.Connection
) -> None:
    violations = await refused(
        posts.CreatePost(post_service_pb2.CreatePostRequest(author_id=0, title=" ", content="")),
        db,
    )
    assert set(violations) == {"author_id", "title", "content"}


async def test_batch_create_posts_names_every_bad_item_by_index_and_creates_nothing(
    posts: PostStub, db: asyncpg.Connection, author: int
) -> None:
    requests = [create_post_request(author, title=f"post {i}") for i in range(6)]
    requests[3].title = "   "
    requests[5].content = ""
    requests[5].title = "t" * 201
    violations = await refused(
        posts.BatchCreatePosts(post_service_pb2.BatchCreatePostsRequest(requests=requests)), db
    )
    assert set(violations) == {"requests[3].title", "requests[5].content", "requests[5].title"}


@pytest.mark.parametrize("count", [0, 1001])
async def test_batch_create_posts_with_too_few_or_many_items_is_refused(
    posts: PostStub, db: asyncpg.Connection, author: int, count: int
) -> None:
    requests = [create_post_request(author, title=f"p{i}") for i in range(count)]
    violations = await refused(
        posts.BatchCreatePosts(post_service_pb2.BatchCreatePostsRequest(requests=requests)), db
    )
    assert "requests" in violations


# --- ids ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_id", [0, -1, -(2**63)])
async def test_zero_or_negative_ids_are_refused_naming_the_field(
    users: UserStub, posts: PostStub, db: asyncpg.Connection, bad_id: int
) -> None:
    cases: list[tuple[Awaitable[Any], str]] = [
        (users.GetUser(user_service_pb2.GetUserRequest(id=bad_id)), "id"),
        (users.DeleteUser(user_service_pb2.DeleteUserRequest(id=bad_id)), "id"),
        (
            users.ChangePassword(
                user_service_pb2.ChangePasswordRequest(id=bad_id, new_password=PASSWORD)
            ),
            "id",
        ),
        (
            users.UpdateUser(
                user_service_pb2.UpdateUserRequest(
                    user=resources_pb2.User(id=bad_id, username="bob"),
                    update_mask=field_mask_pb2.FieldMask(paths=["username"]),
                )
            ),
            "user.id",
        ),
        (posts.GetPost(post_service_pb2.GetPostRequest(id=bad_id)), "id"),
        (posts.DeletePost(post_service_pb2.DeletePostRequest(id=bad_id)), "id"),
        (
            posts.UpdatePost(
                post_service_pb2.UpdatePostRequest(
                    post=resources_pb2.Post(id=bad_id, title="t"),
                    update_mask=field_mask_pb2.FieldMask(paths=["title"]),
                )
            ),
            "post.id",
        ),
        (posts.CreatePost(create_post_request(bad_id)), "author_id"),
        (posts.ListPosts(post_service_pb2.ListPostsRequest(author_id=bad_id)), "author_id"),
    ]
    for call, field in cases:
        violations = await refused(call, db)
        assert field in violations, (field, violations)


async def test_unknown_user_view_is_refused(
    users: UserStub, db: asyncpg.Connection, author: int
) -> None:
    violations = await refused(
        users.GetUser(user_service_pb2.GetUserRequest(id=author, view=99)),  # type: ignore[arg-type]
        db,
    )
    assert set(violations) == {"view"}


# --- control characters -------------------------------------------------------------------------

# C0, DEL and C1, the escape that starts terminal sequences among them.
CONTROLS = ["\x01", "\x1b", "\t", "\n", "\r", "\x7f", "\x85", "\x9b"]


@pytest.mark.parametrize("control", CONTROLS)
async def test_control_characters_in_names_addresses_and_titles_are_refused_naming_the_field(
    users: UserStub,
    posts: PostStub,
    db: asyncpg.Connection,
    author: int,
    post_id: int,
    control: str,
) -> None:
    cases: list[tuple[Awaitable[Any], str]] = [
        (users.CreateUser(create_user_request(email=f"a{control}b@example.com")), "email"),
        (users.CreateUser(create_user_request(username=f"ab{control}c")), "username"),
        (posts.CreatePost(create_post_request(author, title=f"Ti{control}tle")), "title"),
        (
            posts.BatchCreatePosts(
                post_service_pb2.BatchCreatePostsRequest(
                    requests=[create_post_request(author, title=f"{control}[31mred")]
                )
            ),
            "requests[0].title",
        ),
        (
            users.UpdateUser(
                user_service_pb2.UpdateUserRequest(
                    user=resources_pb2.User(id=author, email=f"new{control}@example.com"),
                    update_mask=field_mask_pb2.FieldMask(paths=["email"]),
                )
            ),
            "user.email",
        ),
        (
            posts.UpdatePost(
                post_service_pb2.UpdatePostRequest(
                    post=resources_pb2.Post(id=post_id, title=f"T{control}"),
                    update_mask=field_mask_pb2.FieldMask(paths=["title"]),
                )
            ),
            "post.title",
        ),
        (
            users.ListUsers(user_service_pb2.ListUsersRequest(page_token=f"a{control}")),
            "page_token",
        ),
        (
            posts.ListPosts(post_service_pb2.ListPostsRequest(page_token=f"a{control}")),
            "page_token",
        ),
    ]
    for call, field in cases:
        violations = await refused(call, db)
        assert set(violations) == {field}, (field, violations)
    assert await db.fetchval("SELECT title FROM posts") == "T"


async def test_content_may_hold_newlines_and_tabs(posts: PostStub, author: int) -> None:
    content = "line one\n\tindented\r\nline three"
    post = await posts.CreatePost(create_post_request(author, content=content))
    assert post.content == content


@pytest.mark.parametrize(
    ("record", "rules"),
    [(UserRecord, validation.USER_RULES), (PostRecord, validation.POST_RULES)],
)
def test_every_string_a_client_sets_has_a_rule(record: type[Any], rules: dict[str, Any]) -> None:
    """A string column added to a record is refused at once if no rule checks it: without
    one, a NUL would reach PostgreSQL (an INTERNAL) and any length the column's type."""
    hints = typing.get_type_hints(record)
    strings = {name for name in settable(record) if hints[name] is str}
    assert strings <= set(rules), f"add a rule to service.domain.validation: {strings - set(rules)}"
