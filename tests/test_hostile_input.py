"""Input a hostile or careless client sends: request ids, etags and page tokens the server never
issued. Each ends as the protocol says (OK, ABORTED or INVALID_ARGUMENT), never INTERNAL, and
logs no ERROR: it is the client's mistake, not the service's.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import struct
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest
from blog.v1 import post_service_pb2, resources_pb2, user_service_pb2
from google.protobuf import field_mask_pb2

from service.domain.paging import PageTokens
from service.server import Server
from tests.support import create_user, failure, make_post, rich_error
from tests.support.grpcurl import grpcurl, response_metadata

if TYPE_CHECKING:
    from blog.v1.post_service_pb2_grpc import PostServiceAsyncStub as PostStub
    from blog.v1.user_service_pb2_grpc import UserServiceAsyncStub as UserStub

pytestmark = pytest.mark.usefixtures("db_pool")


@pytest.fixture
def no_errors_logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The in-process server's log records; the test checks that none is an ERROR."""
    caplog.set_level(logging.INFO)
    return caplog


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


# --- request ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize("request_id", ["é-café", "naïve-id", "😀"])
async def test_non_ascii_request_id_is_replaced_and_the_committed_write_answers_ok(
    server: Server, db: asyncpg.Connection, request_id: str
) -> None:
    """grpcurl sends a header value as UTF-8; echoing that back is illegal in gRPC metadata
    and failed the call after its COMMIT: the client saw INTERNAL for a user that exists."""
    body = {"email": "rid@example.com", "username": "rid_user", "password": "password123"}
    result = await grpcurl(
        server,
        "blog.v1.UserService/CreateUser",
        options=("-v", "-H", f"x-request-id: {request_id}", "-d", json.dumps(body)),
    )
    stored = await db.fetchval("SELECT count(*) FROM users WHERE username = 'rid_user'")
    assert stored == 1
    assert result.returncode == 0, result.stdout + result.stderr
    echoed = re.findall(r"x-request-id: (\S+)", response_metadata(result.stdout))
    assert echoed and all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in echoed), echoed


async def test_printable_ascii_request_id_of_128_characters_is_kept(server: Server) -> None:
    request_id = "a-Z_0.9:~" * 14 + "xy"  # 128 printable ASCII characters
    assert len(request_id) == 128
    result = await grpcurl(
        server,
        "blog.v1.UserService/ListUsers",
        options=("-v", "-H", f"x-request-id: {request_id}", "-d", "{}"),
    )
    assert result.returncode == 0, result.stderr
    assert f"x-request-id: {request_id}" in response_metadata(result.stdout)


# --- etags ---------------------------------------------------------------------------------------

# Each was accepted by `str.isdigit` / `int()` or overflowed the version column.
FOREIGN_ETAGS = [
    "v²",
    "v\u0661",  # ARABIC-INDIC DIGIT ONE: int() reads 1, so it matched version 1 and applied
    "v2147483648",
    "v99999999999999999999999999",
    "v-1",
    "v+1",
    "v 1",
    "v01",
    "V1",
    "1",
    "v",
]
CONTROL_ETAGS = ["v1\x01", "\x1b[2Jv1", "v1\x7f", "v1\x85"]


async def test_etags_not_issued_by_the_server_are_aborted_and_change_nothing(
    users: UserStub,
    posts: PostStub,
    db: asyncpg.Connection,
    no_errors_logged: pytest.LogCaptureFixture,
) -> None:
    user = await create_user(users, "etag_user", "etag@example.com")
    post = await make_post(posts, user.id, "T", "C")
    assert user.etag == post.etag == "v1"
    for etag in FOREIGN_ETAGS:
        for call in (
            users.UpdateUser(
                user_service_pb2.UpdateUserRequest(
                    user=resources_pb2.User(id=user.id, username="renamed", etag=etag),
                    update_mask=field_mask_pb2.FieldMask(paths=["username"]),
                )
            ),
            posts.UpdatePost(
                post_service_pb2.UpdatePostRequest(
                    post=resources_pb2.Post(id=post.id, title="Renamed", etag=etag),
                    update_mask=field_mask_pb2.FieldMask(paths=["title"]),
                )
            ),
        ):
            error = await failure(call)
            assert (error.code, error.reason) == (grpc.StatusCode.ABORTED, "STALE_ETAG"), (
                etag,
                error,
            )
    assert await db.fetchval("SELECT username FROM users") == "etag_user"
    assert await db.fetchval("SELECT title FROM posts") == "T"
    assert errors_logged(no_errors_logged) == []


async def test_etags_with_control_characters_are_invalid_argument_naming_the_field(
    users: UserStub, posts: PostStub, no_errors_logged: pytest.LogCaptureFixture
) -> None:
    user = await create_user(users, "etag_user", "etag@example.com")
    post = await make_post(posts, user.id, "T", "C")
    for etag in CONTROL_ETAGS:
        for call, field in (
            (
                users.UpdateUser(
                    user_service_pb2.UpdateUserRequest(
                        user=resources_pb2.User(id=user.id, username="renamed", etag=etag),
                        update_mask=field_mask_pb2.FieldMask(paths=["username"]),
                    )
                ),
                "user.etag",
            ),
            (
                posts.UpdatePost(
                    post_service_pb2.UpdatePostRequest(
                        post=resources_pb2.Post(id=post.id, title="Renamed", etag=etag),
                        update_mask=field_mask_pb2.FieldMask(paths=["title"]),
                    )
                ),
                "post.etag",
            ),
        ):
            error = await failure(call)
            assert error.code == grpc.StatusCode.INVALID_ARGUMENT, (etag, error)
            assert set(error.violations) == {field}, (etag, error.violations)
    assert errors_logged(no_errors_logged) == []


# --- page tokens ---------------------------------------------------------------------------------


def forged_token(
    tokens: PageTokens, collection: str, filters: dict[str, object], micros: int, row_id: int
) -> str:
    """A token signed with the service's own key, as anyone holding PAGE_TOKEN_SECRET (the
    public development key, say) can sign one: any position, a valid MAC."""
    body = struct.pack(">qq8s", micros, row_id, tokens._filters_digest(collection, filters))
    return base64.urlsafe_b64encode(body + tokens._mac(body)).rstrip(b"=").decode()


EXTREME_POSITIONS = [
    (2**63 - 1, 1),
    (-(2**63), 1),
    (253_402_300_800_000_000, 1),  # 10000-01-01: past Python's datetime
    (-62_135_596_800_000_001, 1),  # just before 0001-01-01
    (0, 0),
    (0, -1),
    (0, -(2**63)),
]


@pytest.mark.parametrize(("micros", "row_id"), EXTREME_POSITIONS)
async def test_forged_tokens_with_a_valid_mac_and_extreme_positions_are_invalid_argument(
    server: Server,
    users: UserStub,
    posts: PostStub,
    no_errors_logged: pytest.LogCaptureFixture,
    micros: int,
    row_id: int,
) -> None:
    tokens = PageTokens(server.settings.page_token_secret)
    user_filters: dict[str, object] = {"query": "", "is_active": None}
    post_filters: dict[str, object] = {"author_id": None, "published": None, "query": ""}
    for call in (
        users.ListUsers(
            user_service_pb2.ListUsersRequest(
                page_token=forged_token(tokens, "users", user_filters, micros, row_id)
            )
        ),
        posts.ListPosts(
            post_service_pb2.ListPostsRequest(
                page_token=forged_token(tokens, "posts", post_filters, micros, row_id)
            )
        ),
    ):
        error = await failure(call)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
        assert error.reason == "INVALID_PAGE_TOKEN" and set(error.violations) == {"page_token"}
    assert errors_logged(no_errors_logged) == []


async def test_forged_token_at_the_edges_of_the_calendar_is_served(
    server: Server, users: UserStub
) -> None:
    """The first and last microsecond Python can name are positions, if odd ones: served."""
    tokens = PageTokens(server.settings.page_token_secret)
    filters: dict[str, object] = {"query": "", "is_active": None}
    for micros in (-62_135_596_800_000_000, 253_402_300_799_999_999):
        token = forged_token(tokens, "users", filters, micros, 1)
        await users.ListUsers(user_service_pb2.ListUsersRequest(page_token=token))


async def test_an_issued_token_respelled_is_refused(users: UserStub) -> None:
    """base64 decoders skip characters outside the alphabet, so an issued token with a control
    character, padding or a space inserted read as the same token: one spelling only."""
    for i in range(3):
        await users.CreateUser(
            user_service_pb2.CreateUserRequest(
                email=f"tok{i}@example.com", username=f"tok_user{i}", password="password123"
            )
        )
    first = await users.ListUsers(user_service_pb2.ListUsersRequest(page_size=1))
    token = first.next_page_token
    assert token
    await users.ListUsers(user_service_pb2.ListUsersRequest(page_size=1, page_token=token))
    for respelled in (
        token[:4] + "\x01" + token[4:],
        token + "=",
        token[:4] + " " + token[4:],
        token[:4] + "\n" + token[4:],
        token + "\x00",
    ):
        with pytest.raises(grpc.RpcError) as caught:
            await users.ListUsers(
                user_service_pb2.ListUsersRequest(page_size=1, page_token=respelled)
            )
        error = rich_error(caught.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT, repr(respelled)
        assert set(error.violations) == {"page_token"}
