"""Every SQL statement about users."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache, partial
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, delete, func, insert, or_, select, update

from service.db.models import User
from service.domain.entities import Credentials, UserRecord
from service.domain.paging import Cursor
from service.repositories.base import (
    BaseRepository,
    Columns,
    Query,
    like_pattern,
    limit_clause,
    newest_first_after,
    update_parameters,
    versioned_update,
)

USER = Columns(UserRecord, User)
USER_COLUMNS = USER.columns

_BY_ID = Query(select(*USER_COLUMNS).where(User.id == bindparam("row_id")))
_BY_EMAIL = Query(
    select(*USER_COLUMNS).where(func.lower(User.email) == func.lower(bindparam("email")))
)
_EXISTS = Query(select(User.id).where(User.id == bindparam("row_id")))
_SET_PASSWORD = Query(
    update(User)
    .where(User.id == bindparam("row_id"))
    .values(hashed_password=bindparam("new_hashed_password"))
    .returning(User.id)
)
# A login's rehash: written only over the hash it verified, so a password changed meanwhile
# stays changed (under READ COMMITTED the WHERE is re-checked against the committed row).
_UPGRADE_HASH = Query(
    update(User)
    .where(User.id == bindparam("row_id"), User.hashed_password == bindparam("old_hashed_password"))
    .values(hashed_password=bindparam("new_hashed_password"))
)
_DELETE = Query(delete(User).where(User.id == bindparam("row_id")).returning(User.id))
_CREDENTIALS = Query(
    select(*USER_COLUMNS, User.hashed_password)
    .where(
        or_(
            func.lower(User.email) == func.lower(bindparam("login")),
            func.lower(User.username) == func.lower(bindparam("login")),
        )
    )
    .limit(1)
)


@cache
def _list_query(after: bool, query: bool, is_active: bool, limit: int | None) -> Query:
    """ListUsers for one combination of filters and written LIMIT (None: the parameter): a
    handful of shapes, each compiled once."""
    conditions: list[ColumnElement[bool]] = []
    if after:
        conditions.append(
            newest_first_after(
                User.created_at, User.id, bindparam("after_created_at"), bindparam("after_id")
            )
        )
    if query:
        # lower(col) LIKE lower(pattern) is ILIKE's own match (PostgreSQL folds both sides for
        # a UTF-8 database), but the pattern folds once per call, not once per row, and the
        # trigram indexes are on these expressions (migration 0003).
        pattern = func.lower(bindparam("pattern", type_=User.email.type))
        conditions.append(
            or_(
                func.lower(User.email).like(pattern, escape="\\"),
                func.lower(User.username).like(pattern, escape="\\"),
            )
        )
    if is_active:
        conditions.append(User.is_active == bindparam("is_active"))
    if not query:
        return Query(_newest_first(USER_COLUMNS, conditions, limit))
    # A search picks its page's ids first, from ix_users_newest_first_search alone (an
    # index-only scan: the lowered email and username are stored in it, so the walk past the
    # users that do not match folds no text), then reads those rows (migration 0005).
    found = _newest_first((User.id, User.created_at), conditions, limit).subquery("page")
    return Query(
        select(*USER_COLUMNS)
        .join_from(found, User, User.id == found.c.id)
        .order_by(found.c.created_at.desc(), found.c.id.desc())
    )


def _newest_first(
    columns: Sequence[Any], conditions: Sequence[ColumnElement[bool]], limit: int | None
) -> Select[Any]:
    statement = select(*columns).where(*conditions)
    return statement.order_by(User.created_at.desc(), User.id.desc()).limit(limit_clause(limit))


@cache
def _create_query(fields: tuple[str, ...]) -> Query:
    """CreateUser for one set of fields (the columns left out take their defaults)."""
    values: dict[str, Any] = {
        name: bindparam(f"new_{name}") for name in (*fields, "hashed_password")
    }
    return Query(insert(User).values(values).returning(*USER_COLUMNS))


@cache
def _update_query(fields: tuple[str, ...], conditional: bool) -> Query:
    """UpdateUser for one set of fields, optionally only at an expected version."""
    return Query(versioned_update(User, fields, conditional=conditional).returning(*USER_COLUMNS))


class UserRepository(BaseRepository):
    async def create(self, *, hashed_password: str, **values: Any) -> UserRecord:
        """Inserts a user with `values` (fields of UserRecord, e.g. email=, username=)."""
        statement = _create_query(tuple(sorted(values)))
        new = {f"new_{name}": value for name, value in values.items()}
        row = await self._one(statement, new_hashed_password=hashed_password, **new)
        assert row is not None
        return USER.read(row)

    async def get(self, user_id: int) -> UserRecord | None:
        row = await self._one(_BY_ID, row_id=user_id)
        return None if row is None else USER.read(row)

    async def get_by_email(self, email: str) -> UserRecord | None:
        row = await self._one(_BY_EMAIL, email=email)
        return None if row is None else USER.read(row)

    async def list_newest_first(
        self, *, limit: int, after: Cursor | None, query: str, is_active: bool | None
    ) -> list[UserRecord]:
        shape = partial(_list_query, after is not None, bool(query), is_active is not None)
        params: dict[str, Any] = {}
        if after is not None:
            params.update(after_created_at=after.created_at, after_id=after.id)
        if query:
            params["pattern"] = like_pattern(query)
        if is_active is not None:
            params["is_active"] = is_active
        rows = await self._page(shape, limit, bool(query), **params)
        return [USER.read(row) for row in rows]

    async def update(
        self, user_id: int, values: dict[str, Any], *, expected_version: int | None
    ) -> UserRecord | None:
        """Applies `values`, bumping the version; None when the id or the version does not match."""
        statement = _update_query(tuple(sorted(values)), expected_version is not None)
        row = await self._one(statement, **update_parameters(user_id, values, expected_version))
        return None if row is None else USER.read(row)

    async def exists(self, user_id: int) -> bool:
        return await self._one(_EXISTS, row_id=user_id) is not None

    async def set_password(self, user_id: int, hashed_password: str) -> bool:
        row = await self._one(_SET_PASSWORD, row_id=user_id, new_hashed_password=hashed_password)
        return row is not None

    async def upgrade_hash(self, user_id: int, old_hash: str, new_hash: str) -> None:
        """Replaces `old_hash` by `new_hash`; does nothing if the stored hash is no longer `old_hash`."""
        await self._all(
            _UPGRADE_HASH,
            row_id=user_id,
            old_hashed_password=old_hash,
            new_hashed_password=new_hash,
        )

    async def delete(self, user_id: int) -> bool:
        """Deletes the user; their posts go with them (ON DELETE CASCADE)."""
        return await self._one(_DELETE, row_id=user_id) is not None

    async def credentials(self, login: str) -> Credentials | None:
        """The user whose email or username is `login` (case-insensitively), with the hash."""
        row = await self._one(_CREDENTIALS, login=login)
        if row is None:
            return None
        return Credentials(USER.read(row), row[USER.width])
