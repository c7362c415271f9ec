"""UserService through the real server: what a client sees, and the rows left behind."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import pytest
from blog.v1 import post_service_pb2, resources_pb2, user_service_pb2
from google.protobuf import field_mask_pb2

from tests.support import PASSWORD, create_user, failure, rich_error

if TYPE_CHECKING:
    from blog.v1.post_service_pb2_grpc import PostServiceAsyncStub as PostStub
    from blog.v1.user_service_pb2_grpc import UserServiceAsyncStub as UserStub

# conftest's autouse `empty_tables` fetches db_pool lazily, which fails inside the running loop
# unless the session-scoped pool is already part of the test's fixture closure.
pytestmark = pytest.mark.usefixtures("db_pool")


async def update(
    users: UserStub, user: resources_pb2.User, paths: list[str] | None = None
) -> resources_pb2.User:
    request = user_service_pb2.UpdateUserRequest(user=user)
    if paths is not None:
        request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=paths))
    return await users.UpdateUser(request)


async def user_row(db: asyncpg.Connection, user_id: int) -> dict[str, Any]:
    row = await db.fetchrow("SELECT * FROM users WHERE id = $1", user_id)
    assert row is not None
    return dict(row)


async def authenticate(users: UserStub, login: str, password: str) -> resources_pb2.User:
    return await users.AuthenticateUser(
        user_service_pb2.AuthenticateUserRequest(login=login, password=password)
    )


def all_strings(message: Any) -> list[str]:
    """Every string value anywhere in a message, recursively."""
    found: list[str] = []
    for _, value in message.ListFields():
        if isinstance(value, str):
            found.append(value)
        elif hasattr(value, "ListFields"):
            found.extend(all_strings(value))
        elif isinstance(value, (list, tuple)) or hasattr(value, "__iter__"):
            for item in value:
                if hasattr(item, "ListFields"):
                    found.extend(all_strings(item))
    return found


# --- CreateUser --------------------------------------------------------------------------------


async def test_create_user_returns_active_user_with_etag_and_created_at_only(
    users: UserStub,
) -> None:
    user = await create_user(users, "alice", is_superuser=True)
    assert user.id > 0
    assert (user.email, user.username) == ("alice@example.com", "alice")
    assert user.is_active and user.is_superuser
    assert user.etag
    assert user.HasField("created_at") and not user.HasField("updated_at")


async def test_create_user_stores_argon2id_hash_never_returned(
    users: UserStub, db: asyncpg.Connection
) -> None:
    user = await create_user(users, "alice")
    row = await user_row(db, user.id)
    assert row["hashed_password"].startswith("$argon2id$")
    assert PASSWORD not in row["hashed_password"]
    for value in all_strings(user):
        assert "argon2" not in value and PASSWORD not in value
    fetched = await users.GetUser(user_service_pb2.GetUserRequest(id=user.id))
    for value in all_strings(fetched):
        assert "argon2" not in value


@pytest.mark.parametrize(
    ("email", "username", "reason", "field"),
    [
        ("ALICE@Example.COM", "other", "EMAIL_TAKEN", "email"),
        ("other@example.com", "ALICE", "USERNAME_TAKEN", "username"),
    ],
)
async def test_create_user_with_taken_email_or_username_any_case_is_already_exists(
    users: UserStub, db: asyncpg.Connection, email: str, username: str, reason: str, field: str
) -> None:
    await create_user(users, "alice")
    error = await failure(
        users.CreateUser(
            user_service_pb2.CreateUserRequest(email=email, username=username, password=PASSWORD)
        )
    )
    assert error.code == grpc.StatusCode.ALREADY_EXISTS
    assert (error.reason, error.domain) == (reason, "blog.v1")
    assert field in error.message
    assert await db.fetchval("SELECT count(*) FROM users") == 1


async def test_concurrent_creates_with_one_email_give_one_user_and_already_exists(
    users: UserStub, db: asyncpg.Connection
) -> None:
    results = await asyncio.gather(
        *(
            create_user(
                users, f"racer{i}", email="RACE@EXAMPLE.COM" if i % 2 else "race@example.com"
            )
            for i in range(6)
        ),
        return_exceptions=True,
    )
    created = [r for r in results if isinstance(r, resources_pb2.User)]
    errors = [rich_error(r) for r in results if isinstance(r, grpc.RpcError)]
    assert len(created) == 1 and len(errors) == 5
    assert {(e.code, e.reason) for e in errors} == {(grpc.StatusCode.ALREADY_EXISTS, "EMAIL_TAKEN")}
    assert await db.fetchval("SELECT count(*) FROM users") == 1


# --- GetUser / GetUserByEmail -----------------------------------------------------------------


async def test_get_user_returns_created_user(users: UserStub) -> None:
    created = await create_user(users, "alice")
    fetched = await users.GetUser(user_service_pb2.GetUserRequest(id=created.id))
    assert fetched == created


async def test_get_user_with_posts_view_lists_posts_newest_first(
    users: UserStub, db: asyncpg.Connection
) -> None:
    user = await create_user(users, "alice")
    for i in range(3):
        await db.execute(
            "INSERT INTO posts (author_id, title, content, created_at)"
            " VALUES ($1, $2, 'c', now() + make_interval(secs => $3))",
            user.id,
            f"p{i}",
            float(i),
        )
    basic = await users.GetUser(user_service_pb2.GetUserRequest(id=user.id))
    assert len(basic.posts) == 0
    full = await users.GetUser(
        user_service_pb2.GetUserRequest(id=user.id, view=resources_pb2.USER_VIEW_WITH_POSTS)
    )
    assert [p.title for p in full.posts] == ["p2", "p1", "p0"]


async def test_get_unknown_user_is_not_found_naming_the_id(users: UserStub) -> None:
    error = await failure(users.GetUser(user_service_pb2.GetUserRequest(id=424242)))
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert (error.reason, error.domain) == ("USER_NOT_FOUND", "blog.v1")
    assert "424242" in error.message and "user" in error.message.lower()


async def test_get_user_by_email_is_case_insensitive(users: UserStub) -> None:
    created = await create_user(users, "alice", email="Alice@Example.com")
    found = await users.GetUserByEmail(
        user_service_pb2.GetUserByEmailRequest(email="aLICE@eXAMPLE.COM")
    )
    assert found.id == created.id and found.email == "Alice@Example.com"


async def test_get_user_by_unknown_email_is_not_found(users: UserStub) -> None:
    error = await failure(
        users.GetUserByEmail(user_service_pb2.GetUserByEmailRequest(email="nobody@example.com"))
    )
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "USER_NOT_FOUND" and error.domain == "blog.v1"


# --- UpdateUser --------------------------------------------------------------------------------


async def test_update_user_with_mask_changes_only_masked_fields(
    users: UserStub, db: asyncpg.Connection
) -> None:
    user = await create_user(users, "alice")
    changed = resources_pb2.User(
        id=user.id, email="new@example.com", username="bob", is_superuser=True
    )
    updated = await update(users, changed, ["username"])
    assert updated.username == "bob"
    assert updated.email == "alice@example.com" and not updated.is_superuser
    row = await user_row(db, user.id)
    assert (row["username"], row["email"], row["is_superuser"]) == (
        "bob",
        "alice@example.com",
        False,
    )


async def test_update_user_mask_star_replaces_every_updatable_field(users: UserStub) -> None:
    user = await create_user(users, "alice", is_superuser=True)
    # is_active and is_superuser default to False in the message: '*' applies them too.
    updated = await update(
        users, resources_pb2.User(id=user.id, email="b@example.com", username="bob"), ["*"]
    )
    assert (updated.email, updated.username) == ("b@example.com", "bob")
    assert not updated.is_active and not updated.is_superuser


async def test_update_user_without_mask_applies_populated_fields_only(users: UserStub) -> None:
    user = await create_user(users, "alice", is_superuser=True)
    updated = await update(users, resources_pb2.User(id=user.id, username="bob"))
    assert updated.username == "bob"
    assert updated.email == "alice@example.com"
    assert updated.is_active and updated.is_superuser


async def test_update_user_mask_can_set_booleans_to_false(users: UserStub) -> None:
    user = await create_user(users, "alice", is_superuser=True)
    updated = await update(users, resources_pb2.User(id=user.id), ["is_active", "is_superuser"])
    assert not updated.is_active and not updated.is_superuser


@pytest.mark.parametrize("bad_path", ["id", "created_at", "updated_at", "etag", "posts", "nope"])
async def test_update_user_unknown_or_immutable_mask_path_is_invalid_argument(
    users: UserStub, db: asyncpg.Connection, bad_path: str
) -> None:
    user = await create_user(users, "alice")
    before = await user_row(db, user.id)
    error = await failure(
        update(users, resources_pb2.User(id=user.id, username="bob"), ["username", bad_path])
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.domain == "blog.v1" and error.reason
    assert "update_mask.paths[1]" in error.violations
    assert "update_mask.paths[0]" not in error.violations
    assert await user_row(db, user.id) == before


@pytest.mark.parametrize(
    ("field", "reason"), [("email", "EMAIL_TAKEN"), ("username", "USERNAME_TAKEN")]
)
async def test_update_user_to_taken_email_or_username_is_already_exists_and_changes_nothing(
    users: UserStub, db: asyncpg.Connection, field: str, reason: str
) -> None:
    await create_user(users, "alice")
    bob = await create_user(users, "bob")
    before = await user_row(db, bob.id)
    taken = {"email": "ALICE@example.com", "username": "Alice"}[field]
    changed = resources_pb2.User(id=bob.id, is_superuser=True)
    setattr(changed, field, taken)
    error = await failure(update(users, changed, [field, "is_superuser"]))
    assert error.code == grpc.StatusCode.ALREADY_EXISTS
    assert error.reason == reason and field in error.message
    assert await user_row(db, bob.id) == before


async def test_update_user_may_change_the_case_of_its_own_username_and_email(
    users: UserStub,
) -> None:
    user = await create_user(users, "alice")
    changed = resources_pb2.User(id=user.id, email="ALICE@example.com", username="Alice")
    updated = await update(users, changed, ["email", "username"])
    assert (updated.email, updated.username) == ("ALICE@example.com", "Alice")


async def test_update_user_sets_updated_at_from_the_database(
    users: UserStub, db: asyncpg.Connection
) -> None:
    user = await create_user(users, "alice")
    assert (await user_row(db, user.id))["updated_at"] is None
    updated = await update(users, resources_pb2.User(id=user.id, username="bob"), ["username"])
    assert updated.HasField("updated_at")
    row = await user_row(db, user.id)
    assert row["updated_at"] is not None
    assert updated.updated_at.ToDatetime(tzinfo=row["updated_at"].tzinfo) == row["updated_at"]
    assert row["updated_at"] >= row["created_at"]


async def test_update_user_changes_etag_every_time(users: UserStub) -> None:
    user = await create_user(users, "alice")
    etags = [user.etag]
    for name in ("bob", "carol", "bob"):
        user = await update(users, resources_pb2.User(id=user.id, username=name), ["username"])
        etags.append(user.etag)
    assert len(set(etags)) == len(etags)
    fetched = await users.GetUser(user_service_pb2.GetUserRequest(id=user.id))
    assert fetched.etag == etags[-1]


async def test_update_user_with_current_etag_applies(users: UserStub) -> None:
    user = await create_user(users, "alice")
    updated = await update(
        users, resources_pb2.User(id=user.id, username="bob", etag=user.etag), ["username"]
    )
    assert updated.username == "bob"


async def test_update_user_with_stale_etag_is_aborted_and_changes_nothing(
    users: UserStub, db: asyncpg.Connection
) -> None:
    user = await create_user(users, "alice")
    await update(users, resources_pb2.User(id=user.id, username="bob"), ["username"])
    before = await user_row(db, user.id)
    error = await failure(
        update(
            users, resources_pb2.User(id=user.id, username="carol", etag=user.etag), ["username"]
        )
    )
    assert error.code == grpc.StatusCode.ABORTED
    assert (error.reason, error.domain) == ("STALE_ETAG", "blog.v1")
    assert await user_row(db, user.id) == before


async def test_update_user_with_garbage_etag_is_aborted(
    users: UserStub, db: asyncpg.Connection
) -> None:
    user = await create_user(users, "alice")
    before = await user_row(db, user.id)
    error = await failure(
        update(users, resources_pb2.User(id=user.id, username="bob", etag="W/x"), ["username"])
    )
    assert error.code == grpc.StatusCode.ABORTED and error.reason == "STALE_ETAG"
    assert await user_row(db, user.id) == before


async def test_update_user_with_empty_etag_is_unconditional(users: UserStub) -> None:
    user = await create_user(users, "alice")
    await update(users, resources_pb2.User(id=user.id, username="bob"), ["username"])
    updated = await update(users, resources_pb2.User(id=user.id, username="carol"), ["username"])
    assert updated.username == "carol"


async def test_update_unknown_user_is_not_found(users: UserStub) -> None:
    error = await failure(update(users, resources_pb2.User(id=777, username="bob"), ["username"]))
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "USER_NOT_FOUND" and "777" in error.message


async def test_concurrent_updates_of_different_fields_all_survive(
    users: UserStub, db: asyncpg.Connection
) -> None:
    user = await create_user(users, "alice")
    await asyncio.gather(
        update(users, resources_pb2.User(id=user.id, email="new@example.com"), ["email"]),
        update(users, resources_pb2.User(id=user.id, username="bob"), ["username"]),
        update(users, resources_pb2.User(id=user.id, is_superuser=True), ["is_superuser"]),
        update(users, resources_pb2.User(id=user.id), ["is_active"]),
    )
    row = await user_row(db, user.id)
    assert row["email"] == "new@example.com"
    assert row["username"] == "bob"
    assert row["is_superuser"] is True
    assert row["is_active"] is False


async def test_concurrent_conditional_updates_with_one_etag_let_exactly_one_win(
    users: UserStub,
) -> None:
    user = await create_user(users, "alice")
    results = await asyncio.gather(
        *(
            update(
                users,
                resources_pb2.User(id=user.id, username=f"name{i}", etag=user.etag),
                ["username"],
            )
            for i in range(5)
        ),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, resources_pb2.User)]
    losers = [r for r in results if isinstance(r, grpc.RpcError)]
    assert len(winners) == 1 and len(losers) == 4
    assert all(rich_error(e).code == grpc.StatusCode.ABORTED for e in losers)
    fetched = await users.GetUser(user_service_pb2.GetUserRequest(id=user.id))
    assert fetched.username == winners[0].username


# --- ChangePassword / AuthenticateUser -------------------------------------------------------


async def test_change_password_makes_new_password_work_and_old_fail(
    users: UserStub, db: asyncpg.Connection
) -> None:
    user = await create_user(users, "alice")
    old_hash = (await user_row(db, user.id))["hashed_password"]
    await users.ChangePassword(
        user_service_pb2.ChangePasswordRequest(id=user.id, new_password="brand new secret")
    )
    new_hash = (await user_row(db, user.id))["hashed_password"]
    assert new_hash != old_hash and new_hash.startswith("$argon2id$")
    assert (await authenticate(users, "alice", "brand new secret")).id == user.id
    error = await failure(authenticate(users, "alice", PASSWORD))
    assert error.code == grpc.StatusCode.UNAUTHENTICATED


async def test_change_password_of_unknown_user_is_not_found(users: UserStub) -> None:
    error = await failure(
        users.ChangePassword(
            user_service_pb2.ChangePasswordRequest(id=31337, new_password="whatever123")
        )
    )
    assert error.code == grpc.StatusCode.NOT_FOUND and "31337" in error.message


@pytest.mark.parametrize("login", ["alice", "ALICE", "alice@example.com", "Alice@EXAMPLE.com"])
async def test_authenticate_by_email_or_username_in_any_case(users: UserStub, login: str) -> None:
    user = await create_user(users, "alice")
    authenticated = await authenticate(users, login, PASSWORD)
    assert authenticated.id == user.id and authenticated.username == "alice"


async def test_authenticate_failures_are_indistinguishable(
    users: UserStub, db: asyncpg.Connection
) -> None:
    await create_user(users, "alice")
    inactive = await create_user(users, "bob")
    await update(users, resources_pb2.User(id=inactive.id), ["is_active"])
    wrong_password = await failure(authenticate(users, "alice", "not the password"))
    unknown_login = await failure(authenticate(users, "nobody@example.com", PASSWORD))
    inactive_user = await failure(authenticate(users, "bob", PASSWORD))
    seen = {
        (e.code, e.message, e.reason, e.domain)
        for e in (wrong_password, unknown_login, inactive_user)
    }
    assert len(seen) == 1
    assert wrong_password.code == grpc.StatusCode.UNAUTHENTICATED
    assert wrong_password.reason and wrong_password.domain == "blog.v1"


# --- DeleteUser --------------------------------------------------------------------------------


async def test_delete_user_deletes_their_posts_and_no_one_elses(
    users: UserStub, db: asyncpg.Connection
) -> None:
    alice = await create_user(users, "alice")
    bob = await create_user(users, "bob")
    for author in (alice.id, alice.id, bob.id):
        await db.execute(
            "INSERT INTO posts (author_id, title, content) VALUES ($1, 't', 'c')", author
        )
    await users.DeleteUser(user_service_pb2.DeleteUserRequest(id=alice.id))
    assert await db.fetchval("SELECT count(*) FROM users WHERE id = $1", alice.id) == 0
    assert await db.fetchval("SELECT count(*) FROM posts WHERE author_id = $1", alice.id) == 0
    assert await db.fetchval("SELECT count(*) FROM posts WHERE author_id = $1", bob.id) == 1
    error = await failure(users.GetUser(user_service_pb2.GetUserRequest(id=alice.id)))
    assert error.code == grpc.StatusCode.NOT_FOUND


async def test_delete_user_twice_is_not_found_the_second_time(users: UserStub) -> None:
    user = await create_user(users, "alice")
    await users.DeleteUser(user_service_pb2.DeleteUserRequest(id=user.id))
    error = await failure(users.DeleteUser(user_service_pb2.DeleteUserRequest(id=user.id)))
    assert error.code == grpc.StatusCode.NOT_FOUND and error.reason == "USER_NOT_FOUND"


async def test_delete_unknown_user_is_not_found(users: UserStub, db: asyncpg.Connection) -> None:
    await create_user(users, "alice")
    error = await failure(users.DeleteUser(user_service_pb2.DeleteUserRequest(id=9999)))
    assert error.code == grpc.StatusCode.NOT_FOUND and "9999" in error.message
    assert await db.fetchval("SELECT count(*) FROM users") == 1


# --- display_name ------------------------------------------------------------------------------


async def test_display_name_is_returned_everywhere_a_user_is(
    users: UserStub, posts: PostStub, db: asyncpg.Connection
) -> None:
    name = "Ada Lovelace \u00e9\u4e2d"
    user = await create_user(users, "ada", display_name=name)
    assert user.display_name == name
    assert (await user_row(db, user.id))["display_name"] == name
    post = await posts.CreatePost(
        post_service_pb2.CreatePostRequest(author_id=user.id, title="t", content="c")
    )
    with_posts = await users.GetUser(
        user_service_pb2.GetUserRequest(id=user.id, view=resources_pb2.USER_VIEW_WITH_POSTS)
    )
    got = await posts.GetPost(post_service_pb2.GetPostRequest(id=post.id))
    listed = await posts.ListPosts(post_service_pb2.ListPostsRequest())
    seen: list[resources_pb2.User] = [
        post.author,
        await users.GetUser(user_service_pb2.GetUserRequest(id=user.id)),
        await users.GetUserByEmail(user_service_pb2.GetUserByEmailRequest(email=user.email)),
        (await users.ListUsers(user_service_pb2.ListUsersRequest())).users[0],
        await users.AuthenticateUser(
            user_service_pb2.AuthenticateUserRequest(login="ada", password=PASSWORD)
        ),
        with_posts,
        with_posts.posts[0].author,
        got.author,
        listed.posts[0].author,
    ]
    assert [u.display_name for u in seen] == [name] * len(seen)


async def test_display_name_is_optional_and_empty_when_not_given(
    users: UserStub, db: asyncpg.Connection
) -> None:
    user = await create_user(users, "bob")
    assert user.display_name == "" and not user.HasField("updated_at")
    assert (await user_row(db, user.id))["display_name"] == ""


async def test_display_name_is_updated_by_its_mask_path_by_star_and_without_a_mask(
    users: UserStub,
) -> None:
    user = await create_user(users, "ada", display_name="Ada")
    renamed = await update(
        users, resources_pb2.User(id=user.id, display_name="A. L."), ["display_name"]
    )
    assert (renamed.display_name, renamed.username) == ("A. L.", "ada")
    # '*' sets every updatable field from the message: display_name too.
    starred = resources_pb2.User(
        id=user.id, email=user.email, username="ada", display_name="Countess", is_active=True
    )
    assert (await update(users, starred, ["*"])).display_name == "Countess"
    # No mask: the fields set to a non-default value, display_name among them.
    assert (
        await update(users, resources_pb2.User(id=user.id, display_name="L"))
    ).display_name == "L"
    # Cleared with its mask path: empty means "none".
    cleared = await update(users, resources_pb2.User(id=user.id), ["display_name"])
    assert cleared.display_name == ""


@pytest.mark.parametrize("value", ["x" * 100, "\u00e9" * 100, "\U0001f600" * 100, ""])
async def test_display_name_of_at_most_100_characters_is_accepted(
    users: UserStub, value: str
) -> None:
    user = await create_user(users, "ada", display_name=value)
    assert user.display_name == value
    updated = await update(
        users, resources_pb2.User(id=user.id, display_name=value), ["display_name"]
    )
    assert updated.display_name == value


@pytest.mark.parametrize(
    "value", ["x" * 101, "\u00e9" * 101, "Ada\x00", "Ada\nLovelace", "\x1b[31m", "a\x85"]
)
async def test_display_name_too_long_or_with_control_characters_is_refused(
    users: UserStub, db: asyncpg.Connection, value: str
) -> None:
    error = await failure(create_user(users, "ada", display_name=value))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and "display_name" in error.violations
    assert await db.fetchval("SELECT count(*) FROM users") == 0
    user = await create_user(users, "bob", display_name="Bob")
    error = await failure(
        update(users, resources_pb2.User(id=user.id, display_name=value), ["display_name"])
    )
    assert (
        error.code == grpc.StatusCode.INVALID_ARGUMENT and "user.display_name" in error.violations
    )
    assert (await user_row(db, user.id))["display_name"] == "Bob"
