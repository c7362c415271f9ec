"""What the repositories return: plain, immutable records, free of any database or gRPC type."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# Who sets a field, after AIP-203's field behaviours. A field with neither is the client's to
# set, on create and on update (an update mask path); the repositories read every field of a
# record from the model's column of the same name (repositories.base.Columns).
_BEHAVIOUR = "behaviour"
OUTPUT_ONLY: Any = {_BEHAVIOUR: "output only"}  # the server's alone: ids, timestamps, version
IMMUTABLE: Any = {_BEHAVIOUR: "immutable"}  # set on create, never changed


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: int = field(metadata=OUTPUT_ONLY)
    email: str
    username: str
    display_name: str
    is_active: bool
    is_superuser: bool
    created_at: datetime = field(metadata=OUTPUT_ONLY)
    updated_at: datetime | None = field(metadata=OUTPUT_ONLY)
    version: int = field(metadata=OUTPUT_ONLY)


@dataclass(frozen=True, slots=True)
class PostRecord:
    id: int = field(metadata=OUTPUT_ONLY)
    author_id: int = field(metadata=IMMUTABLE)
    title: str
    content: str
    published: bool
    created_at: datetime = field(metadata=OUTPUT_ONLY)
    updated_at: datetime | None = field(metadata=OUTPUT_ONLY)
    version: int = field(metadata=OUTPUT_ONLY)
    author: UserRecord = field(metadata=OUTPUT_ONLY)


def settable(record: type[Any]) -> tuple[str, ...]:
    """The fields of `record` a client sets on create, in declaration order."""
    return tuple(f.name for f in fields(record) if f.metadata != OUTPUT_ONLY)


def updatable(record: type[Any]) -> tuple[str, ...]:
    """The fields of `record` an update may change (its mask paths), in declaration order."""
    return tuple(f.name for f in fields(record) if _BEHAVIOUR not in f.metadata)


@dataclass(frozen=True, slots=True)
class NewPost:
    """A validated post to create."""

    author_id: int
    title: str
    content: str
    published: bool


@dataclass(frozen=True, slots=True)
class RememberedRequest:
    """A request_id seen before: what its request was (a fingerprint) and the posts it created."""

    fingerprint: bytes
    post_ids: list[int]


@dataclass(frozen=True, slots=True)
class UserWithPosts:
    user: UserRecord
    posts: list[PostRecord]


@dataclass(frozen=True, slots=True)
class Credentials:
    """A user and their password hash: only the password check ever sees this."""

    user: UserRecord
    hashed_password: str


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str
    # The token that resumes right after one of `items`: lets a page be cut short.
    resume_after: Callable[[T], str]

    def first(self, count: int) -> Page[T]:
        """This page cut to its first `count` items (at least one, so that paging advances),
        with the token that resumes after them; the same page when it holds no more."""
        if count >= len(self.items):
            return self
        if count < 1:
            raise ValueError("a page keeps at least one item")
        return Page(self.items[:count], self.resume_after(self.items[count - 1]), self.resume_after)


def etag_of(version: int) -> str:
    """The etag clients see for a row version. Opaque to clients; parsed back by `version_of`."""
    return f"v{version}"


# What `etag_of` writes: ASCII digits (str.isdigit also takes "²", int() other scripts' digits),
# and no more than a version column (a PostgreSQL integer) can hold.
_ETAG = re.compile(r"v(0|[1-9][0-9]{0,9})", re.ASCII)
_VERSION_MAX = 2**31 - 1


def version_of(etag: str) -> int | None:
    """The row version an etag names, or None when it is not one of ours."""
    match = _ETAG.fullmatch(etag)
    if match is None:
        return None
    version = int(match[1])
    return version if version <= _VERSION_MAX else None
