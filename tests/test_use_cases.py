"""The use cases' own rules, against in-memory ports (tests.support.fakes): no server, no database.

What a client observes of the same rules (codes, details, rows) is tested against the real
server elsewhere (test_users, test_posts, test_paging, test_passwords, test_request_ids);
these say which rule lives in the domain, and fail in milliseconds when one breaks.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from blog.v1.error_reason_pb2 import ErrorReason
from google.rpc import code_pb2

from service.domain import validation
from service.domain.entities import NewPost, Page, UserRecord, etag_of, version_of
from service.domain.errors import (
    AlreadyExists,
    DomainError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    StaleEtag,
    Unauthenticated,
)
from service.domain.paging import PageTokens
from service.domain.passwords import Passwords
from service.domain.posts import Posts
from service.domain.users import WITH_POSTS_MAX, Users
from tests.support.fakes import FakeDatabase

PASSWORD = "correct horse battery"
TOKENS = PageTokens("test secret")


class JournaledPasswords(Passwords):
    """Real Argon2 (at a cost a test can afford) that notes each hash and check in the journal."""

    def __init__(self, db: FakeDatabase, *, time_cost: int = 1, capacity: int = 4) -> None:
        super().__init__(
            memory_kib=8, time_cost=time_cost, parallelism=1, threads=1, queue=capacity - 1
        )
        self._journal = db.journal

    async def hash(self, password: str) -> str:
        self._journal.append("hash")
        return await super().hash(password)

    async def verify(self, hashed: str | None, password: str) -> bool:
        self._journal.append("verify")
        return await super().verify(hashed, password)


@pytest.fixture
def db() -> FakeDatabase:
    return FakeDatabase()


@pytest.fixture
def passwords(db: FakeDatabase) -> Iterator[Passwords]:
    hasher = JournaledPasswords(db)
    yield hasher
    hasher.close()


@pytest.fixture
def users(db: FakeDatabase, passwords: Passwords) -> Users:
    return db.user_cases(passwords, TOKENS)


@pytest.fixture
def posts(db: FakeDatabase) -> Posts:
    return db.post_cases(TOKENS)


async def new_user(users: Users, name: str = "ada") -> UserRecord:
    return await users.create(
        email=f"{name}@example.com", username=name, password=PASSWORD, is_superuser=False
    )


def failure(error: DomainError) -> tuple[type[DomainError], int, int, str]:
    """Everything a client is told about a domain error: its class, code, reason and message."""
    return type(error), error.code, error.reason, error.message


# Update-if-current (AIP-154)


async def test_an_update_with_the_current_etag_applies_and_moves_the_etag(users: Users) -> None:
    user = await new_user(users)
    updated = await users.update(user.id, {"username": "ada2"}, etag_of(user.version))
    assert (updated.username, updated.version) == ("ada2", user.version + 1)
    assert (await users.get(user.id)).username == "ada2"


async def test_an_update_with_a_stale_etag_is_refused_and_changes_nothing(
    users: Users, db: FakeDatabase
) -> None:
    user = await new_user(users)
    await users.update(user.id, {"username": "first"}, etag_of(user.version))
    with pytest.raises(StaleEtag) as raised:
        await users.update(user.id, {"username": "second"}, etag_of(user.version))
    assert failure(raised.value) == (
        StaleEtag,
        code_pb2.ABORTED,
        ErrorReason.STALE_ETAG,
        f"user {user.id} was changed since etag 'v1': read it again",
    )
    assert (await users.get(user.id)).username == "first"


async def test_an_update_without_an_etag_applies_whatever_the_version(
    users: Users, posts: Posts
) -> None:
    user = await new_user(users)
    post = await posts.create(NewPost(user.id, "t", "c", False))
    for title in ("one", "two"):
        updated = await posts.update(post.id, {"title": title}, "")
    assert (updated.title, updated.version) == ("two", 3)


@pytest.mark.parametrize("etag", ["1", "v01", "v-1", "v²", "v2147483648", "W/v1", "v1 "])
async def test_an_etag_not_of_ours_is_stale_without_touching_the_row(
    users: Users, db: FakeDatabase, etag: str
) -> None:
    user = await new_user(users)
    db.journal.clear()
    with pytest.raises(StaleEtag) as raised:
        await users.update(user.id, {"username": "x"}, etag)
    assert raised.value.message == f"etag {etag!r} does not match user {user.id}"
    assert db.journal == []


@pytest.mark.parametrize("etag", ["", "v1"])
async def test_an_update_of_a_missing_row_is_not_found_with_or_without_etag(
    users: Users, posts: Posts, etag: str
) -> None:
    with pytest.raises(NotFound) as user_missing:
        await users.update(404, {"username": "x"}, etag)
    with pytest.raises(NotFound) as post_missing:
        await posts.update(405, {"title": "x"}, etag)
    assert failure(user_missing.value)[1:] == (
        code_pb2.NOT_FOUND,
        ErrorReason.USER_NOT_FOUND,
        "user 404 not found",
    )
    assert failure(post_missing.value)[1:] == (
        code_pb2.NOT_FOUND,
        ErrorReason.POST_NOT_FOUND,
        "post 405 not found",
    )


def test_etags_round_trip_and_nothing_else_parses() -> None:
    assert [version_of(etag_of(v)) for v in (0, 1, 2**31 - 1)] == [0, 1, 2**31 - 1]
    assert [version_of(e) for e in ("", "v", "V1", "v1\n", "v٣")] == [None] * 5


# Paging (AIP-158)


async def walk(users: Users, page_size: int, **filters: object) -> list[list[int]]:
    pages, token = [], ""
    while True:
        page = await users.list(
            page_size=page_size,
            page_token=token,
            query=str(filters.get("query", "")),
            is_active=filters.get("is_active"),  # type: ignore[arg-type]
        )
        pages.append([u.id for u in page.items])
        token = page.next_page_token
        if not token:
            return pages


async def test_pages_walk_newest_first_with_id_breaking_ties_and_end_without_token(
    users: Users, db: FakeDatabase
) -> None:
    for name in ("a1", "a2", "a3"):  # one instant, as in one transaction: ids decide
        await new_user(users, name)
    db.tick()
    for name in ("b1", "b2"):
        await new_user(users, name)
    assert await walk(users, 2) == [[5, 4], [3, 2], [1]]
    assert await walk(users, 5) == [[5, 4, 3, 2, 1]]  # exactly full: no next token


async def test_a_token_resumes_only_the_query_it_was_issued_for(users: Users) -> None:
    for name in ("ann", "anna", "bob"):
        await new_user(users, name)
    first = await users.list(page_size=1, page_token="", query="ann", is_active=None)
    assert await walk(users, 1, query="ann") == [[2], [1]]
    for query, is_active in (("bob", None), ("ann", True)):
        with pytest.raises(InvalidArgument) as raised:
            await users.list(
                page_size=1, page_token=first.next_page_token, query=query, is_active=is_active
            )
        [violation] = raised.value.violations
        assert (violation.field, violation.description) == (
            "page_token",
            "was issued for a different query: keep the filters of the first page",
        )
        assert raised.value.reason == ErrorReason.INVALID_PAGE_TOKEN


async def test_a_token_is_refused_altered_by_another_secret_or_for_posts(
    users: Users, posts: Posts, db: FakeDatabase
) -> None:
    for name in ("a1", "a2"):
        await new_user(users, name)
    token = (await users.list(page_size=1, page_token="", query="", is_active=None)).next_page_token
    altered = token[:-1] + ("A" if token[-1] != "A" else "B")
    other_hasher = JournaledPasswords(db)
    elsewhere = db.user_cases(other_hasher, PageTokens("another secret"))
    attempts = [
        users.list(page_size=1, page_token=altered, query="", is_active=None),
        elsewhere.list(page_size=1, page_token=token, query="", is_active=None),
        posts.list(
            page_size=1,
            max_bytes=1 << 20,
            page_token=token,
            author_id=None,
            published=None,
            query="",
        ),
    ]
    descriptions = []
    for attempt in attempts:
        with pytest.raises(InvalidArgument) as raised:
            await attempt
        assert raised.value.reason == ErrorReason.INVALID_PAGE_TOKEN
        descriptions.append(raised.value.violations[0].description)
    other_hasher.close()
    assert descriptions[:2] == ["is not a page token issued by this service"] * 2
    assert descriptions[2] == "was issued for a different query: keep the filters of the first page"


def test_page_size_zero_means_the_default_above_the_maximum_is_clamped_negative_refused() -> None:
    v = validation.Violations()
    sizes = [validation.page_size(v, "page_size", n) for n in (0, 1, 1000, 1001, 2**31 - 1)]
    assert sizes == [50, 1, 1000, 1000, 1000]
    assert v.items == []
    assert validation.page_size(v, "page_size", -1) == 50
    assert [(f.field, f.description) for f in v.items] == [("page_size", "must not be negative")]


async def test_a_page_cut_short_resumes_after_its_last_item(users: Users) -> None:
    for name in ("a1", "a2", "a3", "a4"):
        await new_user(users, name)
    page = await users.list(page_size=3, page_token="", query="", is_active=None)
    cut = page.first(1)
    assert [u.id for u in cut.items] == [4]
    rest = await users.list(page_size=3, page_token=cut.next_page_token, query="", is_active=None)
    assert [u.id for u in rest.items] == [3, 2, 1]
    assert page.first(3) is page
    with pytest.raises(ValueError):
        page.first(0)
    assert Page([1], "", str).first(5).next_page_token == ""


async def test_a_user_with_posts_holds_the_newest_hundred(
    users: Users, posts: Posts, db: FakeDatabase
) -> None:
    user = await new_user(users)
    for i in range(WITH_POSTS_MAX + 1):
        db.tick()
        await posts.create(NewPost(user.id, f"t{i}", "c", False))
    found = await users.get_with_posts(user.id, max_bytes=1 << 20)
    assert [p.title for p in found.posts] == [f"t{i}" for i in range(WITH_POSTS_MAX, 0, -1)]
    with pytest.raises(NotFound) as raised:
        await users.get_with_posts(user.id + 1, max_bytes=1 << 20)
    assert raised.value.reason == ErrorReason.USER_NOT_FOUND


# Authenticate


async def test_unknown_login_wrong_password_and_inactive_user_fail_alike(
    users: Users, db: FakeDatabase
) -> None:
    ada = await new_user(users, "ada")
    bob = await new_user(users, "bob")
    await users.update(bob.id, {"is_active": False}, "")
    attempts = [("nobody", PASSWORD), ("ada", "not the password"), ("bob", PASSWORD)]
    seen = []
    for login, password in attempts:
        db.journal.clear()
        with pytest.raises(Unauthenticated) as raised:
            await users.authenticate(login, password)
        # Same answer, and the same work (a real check, even of the dummy hash) to give it.
        seen.append((failure(raised.value), list(db.journal)))
    expected = (
        (Unauthenticated, code_pb2.UNAUTHENTICATED, ErrorReason.INVALID_CREDENTIALS,
         "login or password is incorrect"),
        ["commits_alone", "users.credentials", "release_connection", "verify"],
    )  # fmt: skip
    assert seen == [expected] * 3
    assert (await users.authenticate("ADA@example.com", PASSWORD)).id == ada.id


async def test_no_connection_is_held_while_the_password_is_checked(
    users: Users, db: FakeDatabase
) -> None:
    await new_user(users)
    db.journal.clear()
    await users.authenticate("ada", PASSWORD)
    assert db.journal == ["commits_alone", "users.credentials", "release_connection", "verify"]


async def test_a_login_rehashes_a_hash_of_older_parameters_once(db: FakeDatabase) -> None:
    old = JournaledPasswords(db, time_cost=1)
    user = await new_user(db.user_cases(old, TOKENS))
    old_hash = db.users.hashes[user.id]
    stronger = JournaledPasswords(db, time_cost=2)
    users = db.user_cases(stronger, TOKENS)
    db.journal.clear()
    await users.authenticate("ada", PASSWORD)
    assert db.journal[-3:] == ["hash", "commits_alone", "users.upgrade_hash"]
    new_hash = db.users.hashes[user.id]
    assert new_hash != old_hash and not stronger.needs_rehash(new_hash)
    assert await stronger.verify(new_hash, PASSWORD)
    db.journal.clear()
    await users.authenticate("ada", PASSWORD)
    assert "users.upgrade_hash" not in db.journal
    old.close()
    stronger.close()


async def test_a_full_hashing_capacity_refuses_logins_and_creates_before_any_database_work(
    db: FakeDatabase,
) -> None:
    passwords = JournaledPasswords(db, capacity=1)
    users = db.user_cases(passwords, TOKENS)
    with passwords.admitted():  # the one place taken
        for attempt in (users.authenticate("ada", PASSWORD), new_user(users)):
            with pytest.raises(ResourceExhausted) as raised:
                await attempt
            assert raised.value.reason == ErrorReason.PASSWORD_HASHING_EXHAUSTED
    assert db.journal == []
    passwords.close()


async def test_a_created_user_stores_a_hash_that_verifies_not_the_password(
    users: Users, db: FakeDatabase, passwords: Passwords
) -> None:
    user = await new_user(users)
    stored = db.users.hashes[user.id]
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    await users.change_password(user.id, "another password")
    assert await passwords.verify(db.users.hashes[user.id], "another password")
    with pytest.raises(NotFound) as raised:
        await users.change_password(user.id + 1, "another password")
    assert raised.value.message == f"user {user.id + 1} not found"


# Request ids (AIP-155)


async def test_a_request_id_creates_once_and_answers_the_same_again(
    users: Users, posts: Posts, db: FakeDatabase
) -> None:
    user = await new_user(users)
    request_id = uuid.uuid4()
    batch = [NewPost(user.id, f"t{i}", "c", False) for i in range(3)]
    first = await posts.create_many(batch, request_id)
    again = await posts.create_many(batch, request_id)
    assert [p.id for p in again] == [p.id for p in first] == [1, 2, 3]
    assert len(db.posts.rows) == 3


async def test_without_a_request_id_nothing_is_claimed(
    users: Users, posts: Posts, db: FakeDatabase
) -> None:
    user = await new_user(users)
    db.journal.clear()
    await posts.create(NewPost(user.id, "t", "c", False))
    assert db.journal == ["commits_alone", "posts.create_many"]


# Statements alone (domain.ports.CommitsAlone): a write of one statement declares it, a write
# whose statements stand or fall together does not.


async def test_single_statement_writes_declare_their_statement_alone(
    users: Users, posts: Posts, db: FakeDatabase
) -> None:
    user = await new_user(users)
    post = await posts.create(NewPost(user.id, "t", "c", False))
    calls = {
        "UpdateUser": users.update(user.id, {"username": "ada2"}, ""),
        "UpdatePost": posts.update(post.id, {"title": "t2"}, ""),
        "ChangePassword": users.change_password(user.id, "another password"),
        "DeletePost": posts.delete(post.id),
        "DeleteUser": users.delete(user.id),
        "CreateUser": new_user(users, "bob"),
    }
    for name, call in calls.items():
        db.journal.clear()
        await call
        statements = [entry for entry in db.journal if entry.startswith(("users.", "posts."))]
        assert len(statements) == 1, (name, db.journal)
        before = db.journal[db.journal.index(statements[0]) - 1]
        assert before == "commits_alone", (name, db.journal)


async def test_a_batch_and_a_request_id_get_one_transaction(
    users: Users, posts: Posts, db: FakeDatabase
) -> None:
    user = await new_user(users)
    db.journal.clear()
    await posts.create_many([NewPost(user.id, f"t{i}", "c", False) for i in range(2)])
    await posts.create(NewPost(user.id, "t", "c", False), uuid.uuid4())
    assert "commits_alone" not in db.journal, db.journal


async def test_a_stale_etag_is_told_from_a_missing_row_by_a_read_after_the_update(
    users: Users, posts: Posts, db: FakeDatabase
) -> None:
    user = await new_user(users)
    post = await posts.create(NewPost(user.id, "t", "c", False))
    stale = etag_of(post.version + 1)
    db.journal.clear()
    with pytest.raises(StaleEtag):
        await posts.update(post.id, {"title": "t2"}, stale)
    assert db.journal == ["commits_alone", "posts.update", "commits_alone", "posts.exists"]
    db.journal.clear()
    with pytest.raises(NotFound):
        await posts.update(post.id + 1, {"title": "t2"}, "")  # unconditional: no read needed
    assert db.journal == ["commits_alone", "posts.update"]


async def test_a_request_id_reused_for_another_request_is_refused(
    users: Users, posts: Posts
) -> None:
    user = await new_user(users)
    request_id = uuid.uuid4()
    await posts.create(NewPost(user.id, "t", "c", False), request_id)
    others = [
        posts.create(NewPost(user.id, "t", "c", True), request_id),  # another post
        posts.create_many([NewPost(user.id, "t", "c", False)], request_id),  # another RPC
    ]
    for other in others:
        with pytest.raises(AlreadyExists) as raised:
            await other
        assert raised.value.reason == ErrorReason.REQUEST_ID_REUSED


async def test_a_request_id_whose_post_was_deleted_since_is_not_found(
    users: Users, posts: Posts
) -> None:
    user = await new_user(users)
    request_id = uuid.uuid4()
    created = await posts.create_many(
        [NewPost(user.id, "a", "c", False), NewPost(user.id, "b", "c", False)], request_id
    )
    await posts.delete(created[1].id)
    with pytest.raises(NotFound) as raised:
        await posts.create_many(
            [NewPost(user.id, "a", "c", False), NewPost(user.id, "b", "c", False)], request_id
        )
    assert (raised.value.reason, raised.value.message) == (
        ErrorReason.POST_NOT_FOUND,
        f"post {created[1].id}, created by an earlier call with request_id {request_id},"
        " has been deleted since",
    )
