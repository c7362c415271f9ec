"""The ports: what the use cases need from storage, declared here, where they are used.

service.repositories implements them on PostgreSQL, tests.support.fakes in memory;
service.server is the one place that chooses which (the composition root), so the domain imports
neither. The concrete classes are checked against these Protocols by mypy where server.py passes
them in.

Every method runs in the call's session: the caller's transaction, if any, is not its concern.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from service.domain.entities import (
    Credentials,
    NewPost,
    PostRecord,
    RememberedRequest,
    UserRecord,
    UserWithPosts,
)
from service.domain.paging import Cursor

R = TypeVar("R", covariant=True)


class VersionedRows(Protocol[R]):
    """Rows carrying a version (users, posts), for conditional updates (domain.updates)."""

    async def update(
        self, row_id: int, values: dict[str, Any], *, expected_version: int | None
    ) -> R | None:
        """Applies `values` and bumps the version, only at `expected_version` when one is
        given, in one statement; None when the id or the version does not match."""
        ...

    async def exists(self, row_id: int) -> bool: ...


class UserRows(VersionedRows[UserRecord], Protocol):
    async def create(self, *, hashed_password: str, **values: Any) -> UserRecord:
        """The new user, with `values` for fields of UserRecord a client sets (email=,
        username=, ...; those not given take the table's defaults). A taken email or username
        fails the call with AlreadyExists (EMAIL_TAKEN / USERNAME_TAKEN): the database's unique
        index decides (service.db.errors)."""
        ...

    async def get(self, user_id: int) -> UserRecord | None: ...

    async def get_by_email(self, email: str) -> UserRecord | None:
        """Compared case-insensitively."""
        ...

    async def list_newest_first(
        self, *, limit: int, after: Cursor | None, query: str, is_active: bool | None
    ) -> list[UserRecord]:
        """Up to `limit` users after `after` in (created_at, id) descending order; `query`
        (when not empty) is contained in the email or the username, case-insensitively."""
        ...

    async def set_password(self, user_id: int, hashed_password: str) -> bool:
        """False when there is no such user."""
        ...

    async def upgrade_hash(self, user_id: int, old_hash: str, new_hash: str) -> None:
        """Replaces `old_hash` by `new_hash`; nothing when the stored hash is no longer `old_hash`
        (a password changed meanwhile stays changed)."""
        ...

    async def delete(self, user_id: int) -> bool:
        """False when there is no such user; their posts go with them."""
        ...

    async def credentials(self, login: str) -> Credentials | None:
        """The user whose email or username is `login` (case-insensitively), with the hash."""
        ...


class PostRows(VersionedRows[PostRecord], Protocol):
    async def create_many(self, posts: Sequence[NewPost]) -> list[PostRecord]:
        """The posts created, in the order given; when an author does not exist, NotFound
        (USER_NOT_FOUND) for the lowest such id, and the call's transaction keeps none of them."""
        ...

    async def get(self, post_id: int) -> PostRecord | None: ...

    async def by_ids(self, post_ids: Sequence[int]) -> dict[int, PostRecord]:
        """The posts of `post_ids` that exist, by id."""
        ...

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
        """Up to `limit` posts after `after`, newest first, those whose text (title, content,
        author's email and username) before them stays within `max_bytes`; `query` (when not
        empty) is contained in the title, case-insensitively."""
        ...

    async def user_with_newest_posts(
        self, user_id: int, *, limit: int, max_bytes: int
    ) -> UserWithPosts | None:
        """The user and their newest posts bounded like a ListPosts page, read in one snapshot;
        None when there is no such user."""
        ...

    async def delete(self, post_id: int) -> bool: ...

    def stream(self, *, author_id: int | None, published: bool | None) -> AsyncIterator[PostRecord]:
        """Every matching post, oldest first, read from one snapshot as the caller consumes."""
        ...


class RequestIds(Protocol):
    """The request ids of AIP-155 already seen, and what their first call created."""

    async def claim(self, request_id: uuid.UUID, fingerprint: bytes, keep: timedelta) -> bool:
        """Records a new id for `keep`; False when it is recorded already. A claim racing
        another call's claim of the same id waits for that call's transaction to end."""
        ...

    async def remember(self, request_id: uuid.UUID, post_ids: Sequence[int]) -> None: ...

    async def recall(self, request_id: uuid.UUID) -> RememberedRequest:
        """What a claimed id's first call was and created (after `claim` said False)."""
        ...


class ReleaseConnection(Protocol):
    """Ends the call's use of its database connection for now, committing what is open; a
    later statement of the call leases one again, in a transaction of its own. Called before
    slow work that needs no database (a password hash), so that none is held meanwhile."""

    async def __call__(self) -> None: ...


class CommitsAlone(Protocol):
    """Declares the call's next statement complete on its own: nothing the call did before it
    must commit with it, and nothing it does after must roll back with it (one row inserted or
    nothing, one conditional UPDATE, one DELETE). The session may then run it as its own
    transaction, one round trip instead of three (BEGIN, the statement, COMMIT); a later
    statement of the call runs in a transaction of its own. Only for what is true of that
    statement whatever happens next: a call whose statements must stand or fall together
    (a batch, a request_id claimed and then used) declares nothing and gets one transaction."""

    def __call__(self) -> None: ...
