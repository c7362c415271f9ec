"""In-memory implementations of the domain's ports (service.domain.ports), for fast tests of
the use cases' own rules without a server or a database (cosmicpython's FakeRepository).

They keep the contracts the ports state (orderings, case-insensitive matches, conditional
writes, cascades); what only PostgreSQL decides (a byte budget's exact cut, isolation,
rollbacks) is for the tests against the real server. mypy checks each one against its
Protocol where `FakeDatabase` hands it to a use case.
"""

from __future__ import annotations

import itertools
import typing
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from blog.v1.error_reason_pb2 import ErrorReason

from service.domain.entities import (
    Credentials,
    NewPost,
    PostRecord,
    RememberedRequest,
    UserRecord,
    UserWithPosts,
    settable,
)
from service.domain.errors import AlreadyExists, user_not_found
from service.domain.paging import Cursor, PageTokens
from service.domain.passwords import Passwords
from service.domain.posts import Posts
from service.domain.users import Users

T0 = datetime(2026, 1, 1, tzinfo=UTC)
R = TypeVar("R", UserRecord, PostRecord)


def _newest_first(after: Cursor | None, rows: Sequence[R]) -> list[R]:
    """`rows` in (created_at, id) descending order, only those strictly after `after`."""
    ordered = sorted(rows, key=lambda r: (r.created_at, r.id), reverse=True)
    if after is None:
        return ordered
    return [r for r in ordered if (r.created_at, r.id) < (after.created_at, after.id)]


def _bumped(row: R | None, values: dict[str, Any], expected: int | None, now: datetime) -> R | None:
    """`row` with `values` applied and its version bumped; None when it is missing or not at
    the expected version (the UPDATE ... WHERE version = :expected of the real repositories)."""
    if row is None or (expected is not None and row.version != expected):
        return None
    return replace(row, **values, version=row.version + 1, updated_at=now)


class FakeDatabase:
    """What the in-memory repositories share: their rows, one clock, and a journal of the
    calls made to them in order (so a test can say what a use case did, and when)."""

    def __init__(self) -> None:
        self.now = T0  # rows created before a `tick` share their created_at, as in one transaction
        self.journal: list[str] = []
        self.users = InMemoryUsers(self)
        self.posts = InMemoryPosts(self)
        self.requests = InMemoryRequestIds(self)

    def tick(self, seconds: float = 1) -> None:
        self.now += timedelta(seconds=seconds)

    async def release_connection(self) -> None:
        self.journal.append("release_connection")

    def commits_alone(self) -> None:
        self.journal.append("commits_alone")

    def user_cases(self, passwords: Passwords, tokens: PageTokens) -> Users:
        """The user use cases on these rows (mypy checks each fake against its port here)."""
        return Users(
            users=self.users,
            posts=self.posts,
            release_connection=self.release_connection,
            commits_alone=self.commits_alone,
            passwords=passwords,
            tokens=tokens,
        )

    def post_cases(self, tokens: PageTokens) -> Posts:
        return Posts(
            posts=self.posts,
            requests=self.requests,
            commits_alone=self.commits_alone,
            tokens=tokens,
        )


# What the users table gives a field create does not set: its type's empty value (the
# columns' server defaults), except that new users are active.
_HINTS = typing.get_type_hints(UserRecord)
_TABLE_DEFAULTS: dict[str, Any] = {
    **{name: _HINTS[name]() for name in settable(UserRecord)},
    "is_active": True,
}


class InMemoryUsers:
    def __init__(self, db: FakeDatabase) -> None:
        self._db = db
        self._ids = itertools.count(1)
        self.rows: dict[int, UserRecord] = {}
        self.hashes: dict[int, str] = {}

    def _taken(self, user_id: int | None, email: str, username: str) -> None:
        """The unique indexes on lower(email) and lower(username)."""
        for other in self.rows.values():
            if other.id == user_id:
                continue
            if other.email.lower() == email.lower():
                raise AlreadyExists("email is already taken", reason=ErrorReason.EMAIL_TAKEN)
            if other.username.lower() == username.lower():
                raise AlreadyExists("username is already taken", reason=ErrorReason.USERNAME_TAKEN)

    async def create(self, *, hashed_password: str, **values: Any) -> UserRecord:
        self._db.journal.append("users.create")
        self._taken(None, values["email"], values["username"])
        user = UserRecord(
            **{**_TABLE_DEFAULTS, **values},
            id=next(self._ids),
            created_at=self._db.now,
            updated_at=None,
            version=1,
        )
        self.rows[user.id] = user
        self.hashes[user.id] = hashed_password
        return user

    async def get(self, user_id: int) -> UserRecord | None:
        self._db.journal.append("users.get")
        return self.rows.get(user_id)

    async def get_by_email(self, email: str) -> UserRecord | None:
        self._db.journal.append("users.get_by_email")
        return next((u for u in self.rows.values() if u.email.lower() == email.lower()), None)

    async def list_newest_first(
        self, *, limit: int, after: Cursor | None, query: str, is_active: bool | None
    ) -> list[UserRecord]:
        self._db.journal.append("users.list_newest_first")
        found = [
            u
            for u in self.rows.values()
            if (is_active is None or u.is_active == is_active)
            and (query.lower() in u.email.lower() or query.lower() in u.username.lower())
        ]
        return _newest_first(after, found)[:limit]

    async def update(
        self, row_id: int, values: dict[str, Any], *, expected_version: int | None
    ) -> UserRecord | None:
        self._db.journal.append("users.update")
        changed = _bumped(self.rows.get(row_id), values, expected_version, self._db.now)
        if changed is None:
            return None
        self._taken(row_id, changed.email, changed.username)
        self.rows[row_id] = changed
        return changed

    async def exists(self, row_id: int) -> bool:
        self._db.journal.append("users.exists")
        return row_id in self.rows

    async def set_password(self, user_id: int, hashed_password: str) -> bool:
        self._db.journal.append("users.set_password")
        if user_id not in self.rows:
            return False
        self.hashes[user_id] = hashed_password
        return True

    async def upgrade_hash(self, user_id: int, old_hash: str, new_hash: str) -> None:
        self._db.journal.append("users.upgrade_hash")
        if self.hashes.get(user_id) == old_hash:
            self.hashes[user_id] = new_hash

    async def delete(self, user_id: int) -> bool:
        self._db.journal.append("users.delete")
        if self.rows.pop(user_id, None) is None:
            return False
        del self.hashes[user_id]
        self._db.posts.rows = {
            k: p for k, p in self._db.posts.rows.items() if p.author_id != user_id
        }  # ON DELETE CASCADE
        return True

    async def credentials(self, login: str) -> Credentials | None:
        self._db.journal.append("users.credentials")
        for user in sorted(self.rows.values(), key=lambda u: u.id):
            if login.lower() in (user.email.lower(), user.username.lower()):
                return Credentials(user, self.hashes[user.id])
        return None


def _text_bytes(post: PostRecord) -> int:
    """What the real query counts a post for against a byte budget (repositories.posts)."""
    texts = (post.title, post.content, post.author.email, post.author.username)
    return sum(len(t.encode()) for t in texts)


def _within_budget(posts: list[PostRecord], limit: int, max_bytes: int) -> list[PostRecord]:
    kept, before = [], 0
    for post in posts[:limit]:
        if before > max_bytes:
            break
        kept.append(post)
        before += _text_bytes(post)
    return kept


class InMemoryPosts:
    def __init__(self, db: FakeDatabase) -> None:
        self._db = db
        self._ids = itertools.count(1)
        self.rows: dict[int, PostRecord] = {}

    def _current(self, post: PostRecord) -> PostRecord:
        """The post with its author as they are now (the real queries join users)."""
        return replace(post, author=self._db.users.rows[post.author_id])

    def _all(self, author_id: int | None, published: bool | None) -> list[PostRecord]:
        return [
            self._current(p)
            for p in self.rows.values()
            if (author_id is None or p.author_id == author_id)
            and (published is None or p.published == published)
        ]

    async def create_many(self, posts: Sequence[NewPost]) -> list[PostRecord]:
        self._db.journal.append("posts.create_many")
        missing = {p.author_id for p in posts} - set(self._db.users.rows)
        if missing:
            raise user_not_found(min(missing))
        created = [
            PostRecord(
                next(self._ids),
                p.author_id,
                p.title,
                p.content,
                p.published,
                self._db.now,
                None,
                1,
                self._db.users.rows[p.author_id],
            )
            for p in posts
        ]
        self.rows.update((p.id, p) for p in created)
        return created

    async def get(self, post_id: int) -> PostRecord | None:
        self._db.journal.append("posts.get")
        post = self.rows.get(post_id)
        return None if post is None else self._current(post)

    async def by_ids(self, post_ids: Sequence[int]) -> dict[int, PostRecord]:
        self._db.journal.append("posts.by_ids")
        return {i: self._current(self.rows[i]) for i in post_ids if i in self.rows}

    async def list_newest_first(
        self,
        *,
        limit: int,
        max_bytes: int,
        after: Cursor | None,
        author_id: int | None,
        published: bool | None,
        query: str,
    ) -> list[PostRecord]:
        self._db.journal.append("posts.list_newest_first")
        found = [p for p in self._all(author_id, published) if query.lower() in p.title.lower()]
        return _within_budget(_newest_first(after, found), limit, max_bytes)

    async def user_with_newest_posts(
        self, user_id: int, *, limit: int, max_bytes: int
    ) -> UserWithPosts | None:
        self._db.journal.append("posts.user_with_newest_posts")
        user = self._db.users.rows.get(user_id)
        if user is None:
            return None
        posts = _newest_first(None, self._all(user_id, None))
        return UserWithPosts(user, _within_budget(posts, limit, max_bytes))

    async def update(
        self, row_id: int, values: dict[str, Any], *, expected_version: int | None
    ) -> PostRecord | None:
        self._db.journal.append("posts.update")
        changed = _bumped(self.rows.get(row_id), values, expected_version, self._db.now)
        if changed is None:
            return None
        self.rows[row_id] = changed
        return self._current(changed)

    async def exists(self, row_id: int) -> bool:
        self._db.journal.append("posts.exists")
        return row_id in self.rows

    async def delete(self, post_id: int) -> bool:
        self._db.journal.append("posts.delete")
        return self.rows.pop(post_id, None) is not None

    async def stream(
        self, *, author_id: int | None, published: bool | None
    ) -> AsyncIterator[PostRecord]:
        self._db.journal.append("posts.stream")
        snapshot = sorted(self._all(author_id, published), key=lambda p: (p.created_at, p.id))
        for post in snapshot:
            yield post


@dataclass
class _Request:
    fingerprint: bytes
    post_ids: list[int] | None
    expires_at: datetime


class InMemoryRequestIds:
    def __init__(self, db: FakeDatabase) -> None:
        self._db = db
        self.rows: dict[uuid.UUID, _Request] = {}

    async def claim(self, request_id: uuid.UUID, fingerprint: bytes, keep: timedelta) -> bool:
        self._db.journal.append("requests.claim")
        known = self.rows.get(request_id)
        if known is not None and known.expires_at >= self._db.now:
            return False
        self.rows[request_id] = _Request(fingerprint, None, self._db.now + keep)
        return True

    async def remember(self, request_id: uuid.UUID, post_ids: Sequence[int]) -> None:
        self._db.journal.append("requests.remember")
        self.rows[request_id].post_ids = list(post_ids)

    async def recall(self, request_id: uuid.UUID) -> RememberedRequest:
        self._db.journal.append("requests.recall")
        known = self.rows[request_id]
        assert known.post_ids is not None  # a claimed id's row is committed whole
        return RememberedRequest(known.fingerprint, known.post_ids)
