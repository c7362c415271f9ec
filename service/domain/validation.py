"""SPEC's validation rules, collecting every violation of a request before failing it."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Self

from service.domain.errors import FieldViolation, InvalidArgument

# Plausible, not RFC 5322: one @, no spaces, a dotted domain with a 2+ letter TLD.
_EMAIL = re.compile(
    r"^[^@\s]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
_USERNAME = re.compile(r"^[A-Za-z0-9_.-]{3,100}$")
_UUID = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z"
)

EMAIL_MAX = 255
DISPLAY_NAME_MAX = 100
PASSWORD_MIN, PASSWORD_MAX = 8, 1024
TITLE_MAX = 200
CONTENT_MAX = 100_000
PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX = 50, 1000
BATCH_MAX = 1000
QUERY_MAX = 255


class Violations:
    """Accumulates field violations; `raise_if_any` fails the request with all of them."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def check(self, ok: bool, field: str, description: str) -> bool:
        if not ok:
            self.add(field, description)
        return ok

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.raise_if_any()


def _no_nul(v: Violations, field: str, value: str) -> bool:
    return v.check("\x00" not in value, field, "must not contain NUL characters")


# Unicode's control characters (category Cc: C0, DEL and C1), escape sequences included: names,
# addresses and identifiers hold none of them, lest they reach a terminal or a log line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _no_control(v: Violations, field: str, value: str) -> bool:
    return v.check(_CONTROL.search(value) is None, field, "must not contain control characters")


def email(v: Violations, field: str, value: str) -> None:
    if not _no_control(v, field, value):
        return
    if not value:
        v.add(field, "is required")
    elif len(value) > EMAIL_MAX:
        v.add(field, f"must be at most {EMAIL_MAX} characters")
    elif not _EMAIL.match(value):
        v.add(field, "must be a valid email address such as name@example.com")


def username(v: Violations, field: str, value: str) -> None:
    if not _no_control(v, field, value):
        return
    if not _USERNAME.match(value):
        v.add(field, "must be 3 to 100 characters of letters, digits, '_', '.' or '-'")


def display_name(v: Violations, field: str, value: str) -> None:
    """Optional (empty is none), any text of at most DISPLAY_NAME_MAX characters."""
    if _no_control(v, field, value):
        v.check(
            len(value) <= DISPLAY_NAME_MAX, field, f"must be at most {DISPLAY_NAME_MAX} characters"
        )


def password(v: Violations, field: str, value: str) -> None:
    if not _no_nul(v, field, value):
        return
    if not PASSWORD_MIN <= len(value) <= PASSWORD_MAX:
        v.add(field, f"must be {PASSWORD_MIN} to {PASSWORD_MAX} characters")


def title(v: Violations, field: str, value: str) -> None:
    if not _no_control(v, field, value):
        return
    if not value.strip():
        v.add(field, "must not be empty or blank")
    elif len(value) > TITLE_MAX:
        v.add(field, f"must be at most {TITLE_MAX} characters")


def content(v: Violations, field: str, value: str) -> None:
    if not _no_nul(v, field, value):
        return
    if not value:
        v.add(field, "must not be empty")
    elif len(value) > CONTENT_MAX:
        v.add(field, f"must be at most {CONTENT_MAX} characters")


def search_query(v: Violations, field: str, value: str) -> None:
    if _no_nul(v, field, value):
        v.check(len(value) <= QUERY_MAX, field, f"must be at most {QUERY_MAX} characters")


def free_text(v: Violations, field: str, value: str) -> None:
    """Any string is acceptable (a login, a password to check) except one with NUL, which
    PostgreSQL cannot store or compare."""
    _no_nul(v, field, value)


def token(v: Violations, field: str, value: str) -> None:
    """An etag or a page token: opaque, but never holding a control character. Whether it is
    one this service issued is for the use case to say."""
    _no_control(v, field, value)


def request_id(v: Violations, field: str, value: str) -> uuid.UUID | None:
    """An AIP-155 request id: empty (None) or a UUID in its 8-4-4-4-12 form, any case."""
    if not value:
        return None
    if not _UUID.match(value):
        v.add(field, "must be a UUID such as 0b6f9c3e-8a1d-4c2b-9f4e-5d7a1b2c3d4e, or empty")
        return None
    return uuid.UUID(value)


def resource_id(v: Violations, field: str, value: int) -> None:
    v.check(value > 0, field, "must be a positive id")


def page_size(v: Violations, field: str, value: int) -> int:
    """SPEC's paging rule: 0 means the default, above the maximum is clamped, negative is refused."""
    if value < 0:
        v.add(field, "must not be negative")
        return PAGE_SIZE_DEFAULT
    if value == 0:
        return PAGE_SIZE_DEFAULT
    return min(value, PAGE_SIZE_MAX)


Rule = Callable[[Violations, str, Any], None]

# The rule of each field a client sets on a user (CreateUser, UpdateUser) or a post, by
# field name; a field a client sets that is not here needs no check (a flag, an id).
USER_RULES: dict[str, Rule] = {"email": email, "username": username, "display_name": display_name}
POST_RULES: dict[str, Rule] = {"title": title, "content": content}


def fields(
    v: Violations, prefix: str, message: Any, names: Sequence[str], rules: dict[str, Rule]
) -> None:
    """Checks each of `names` of `message` that has a rule, naming it `prefix` + its name."""
    for name in names:
        rule = rules.get(name)
        if rule is not None:
            rule(v, f"{prefix}{name}", getattr(message, name))
