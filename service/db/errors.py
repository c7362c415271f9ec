"""Translates database failures into domain errors: the data layer's half of the error model."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import asyncpg
from blog.v1.error_reason_pb2 import ErrorReason
from sqlalchemy import exc as sa_exc

from service.db.models import Post
from service.domain.errors import (
    AlreadyExists,
    DatabaseUnavailable,
    DeadlineExceeded,
    DomainError,
    ReadOnlyViolation,
    TransientConflict,
    user_not_found,
)

# Unique indexes whose violation a client caused, and what to tell it.
_UNIQUE = {
    "uq_users_lower_email": AlreadyExists("email is already taken", reason=ErrorReason.EMAIL_TAKEN),
    "uq_users_lower_username": AlreadyExists(
        "username is already taken", reason=ErrorReason.USERNAME_TAKEN
    ),
}


def _foreign_key(column: Any) -> str:
    """The name of the foreign key on `column`, as the model (and so the migrations) name it."""
    (key,) = column.foreign_keys
    return str(key.constraint.name)


# Foreign keys whose violation a client caused, by constraint name: a row the request names
# does not exist, or no longer (a post's author deleted while the post was being inserted).
# A violation of any other is a bug of ours: INTERNAL, never a NOT_FOUND about the wrong thing.
_FOREIGN_KEYS: dict[str, Callable[[int], DomainError]] = {
    _foreign_key(Post.author_id): user_not_found,
}
# The missing key, from PostgreSQL's DETAIL: Key (author_id)=(42) is not present in table "users".
_MISSING_KEY = re.compile(r"\)=\((-?\d+)\)")

_CONNECTION_ERRORS = (
    OSError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,  # class 08: the connection is gone or refused
    # asyncpg's own protocol errors: a multi-host URL (target_session_attrs=primary) while no
    # host is the primary (TargetServerAttributeNotMatched, during a Patroni switchover), and
    # "cannot switch to state 15; another operation (2) is in progress", a connection that
    # PostgreSQL terminated (FATAL 57P01 at a switchover) between two statements of a call.
    # Also a server that shut down mid-message during a fast restart. Each means this
    # connection cannot be used: unavailable, not a bug (tests/test_patroni.py, test_outage.py).
    asyncpg.exceptions.InternalClientError,
)


def is_disconnect(error: BaseException) -> bool:
    """Whether `error` means the connection itself is gone or unusable (not a bad statement)."""
    if isinstance(error, sa_exc.DBAPIError):
        return error.connection_invalidated or (
            error.orig is not None and is_disconnect(error.orig)
        )
    driver = getattr(error, "__cause__", None) or error
    # A bad argument (DataError) is asyncpg refusing a value, and a timeout (an OSError since
    # Python 3.11) is our own clock: neither says anything about the connection.
    if isinstance(driver, asyncpg.exceptions.DataError | TimeoutError):
        return False
    return isinstance(driver, _CONNECTION_ERRORS) or isinstance(error, _CONNECTION_ERRORS)


def reported_by_server(error: BaseException) -> bool:
    """Whether PostgreSQL itself reported `error` (a constraint, a conflict, a cancelled
    statement): the connection then still works, while a driver or network error may not."""
    return isinstance(error, asyncpg.PostgresError) and not isinstance(error, _CONNECTION_ERRORS)


def translate(error: BaseException) -> DomainError | None:
    """The domain error a database exception means, or None when it is a plain bug."""
    if isinstance(error, DomainError):
        return error
    if isinstance(error, sa_exc.TimeoutError):  # no pooled connection within DB_POOL_TIMEOUT
        return DatabaseUnavailable("no database connection available: the pool is exhausted")
    if isinstance(error, TimeoutError):  # connecting took longer than DB_POOL_TIMEOUT
        return DatabaseUnavailable("the database did not answer in time; retry the call")
    cause = error.orig if isinstance(error, sa_exc.DBAPIError) else error
    driver = getattr(cause, "__cause__", None) or cause
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return DatabaseUnavailable("the database connection was lost; retry the call")
    if isinstance(driver, asyncpg.exceptions.UniqueViolationError):
        known = _UNIQUE.get(driver.constraint_name or "")
        if known is not None:
            return AlreadyExists(known.message, reason=known.reason)
    if isinstance(driver, asyncpg.exceptions.ForeignKeyViolationError):
        missing = _FOREIGN_KEYS.get(driver.constraint_name or "")
        key = _MISSING_KEY.search(driver.detail or "")
        if missing is not None and key is not None:
            return missing(int(key[1]))
        return None
    if isinstance(driver, asyncpg.exceptions.QueryCanceledError):
        return DeadlineExceeded("the deadline passed while the database was working")
    if isinstance(
        driver,
        asyncpg.exceptions.SerializationError | asyncpg.exceptions.DeadlockDetectedError,
    ):
        return TransientConflict("the transaction conflicted with another one; retry the call")
    if isinstance(driver, asyncpg.exceptions.ReadOnlySQLTransactionError):
        return ReadOnlyViolation("a read-only call attempted a write")
    if is_disconnect(error):
        return DatabaseUnavailable("the database is unreachable; retry the call")
    return None
