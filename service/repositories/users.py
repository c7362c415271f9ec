"""Every SQL statement about users."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, delete, func, insert, or_, select, update

from service.db.models import User
from service.domain.entities import Credentials, UserRecord
from service.domain.paging import Cursor
from service.repositories.base import BaseRepository, contains_ignoring_case, newest_first_after

USER_COLUMNS = (
    User.id,
    User.email,
    User.username,
    User.is_active,
    User.is_superuser,
    User.created_at,
    User.updated_at,
    User.version,
)
_WIDTH = len(USER_COLUMNS)


def user_from_row(row: Row[Any] | tuple[Any, ...], start: int = 0) -> UserRecord:
    return UserRecord(*row[start : start + _WIDTH])


class UserRepository(BaseRepository):
    async def create(
        self, *, email: str, username: str, hashed_password: str, is_superuser: bool
    ) -> UserRecord:
        row = await self._one(
            insert(User)
            .values(
                email=email,
                username=username,
                hashed_password=hashed_password,
                is_superuser=is_superuser,
            )
            .returning(*USER_COLUMNS)
        )
        assert row is not None
        return user_from_row(row)

    async def get(self, user_id: int) -> UserRecord | None:
        row = await self._one(select(*USER_COLUMNS).where(User.id == user_id))
        return None if row is None else user_from_row(row)

    async def get_by_email(self, email: str) -> UserRecord | None:
        row = await self._one(
            select(*USER_COLUMNS).where(func.lower(User.email) == func.lower(email))
        )
        return None if row is None else user_from_row(row)

    async def list(
        self, *, limit: int, after: Cursor | None, query: str, is_active: bool | None
    ) -> list[UserRecord]:
        statement = select(*USER_COLUMNS).where(
            *newest_first_after(User.created_at, User.id, after)
        )
        if query:
            statement = statement.where(
                or_(contains_ignoring_case(User.email, query), contains_ignoring_case(User.username, query))
            )
        if is_active is not None:
            statement = statement.where(User.is_active == is_active)
        statement = statement.order_by(User.created_at.desc(), User.id.desc()).limit(limit)
        return [user_from_row(row) for row in await self._all(statement)]

    async def update(
        self, user_id: int, values: dict[str, Any], *, expected_version: int | None
    ) -> UserRecord | None:
        """Applies `values`, bumping the version; None when the id or the version does not match."""
        statement = (
            update(User)
            .where(User.id == user_id)
            .values(**values, version=User.version + 1, updated_at=func.now())
            .returning(*USER_COLUMNS)
        )
        if expected_version is not None:
            statement = statement.where(User.version == expected_version)
        row = await self._one(statement)
        return None if row is None else user_from_row(row)

    async def exists(self, user_id: int) -> bool:
        return bool(await self._scalar(select(User.id).where(User.id == user_id)))

    async def set_password(self, user_id: int, hashed_password: str) -> bool:
        row = await self._one(
            update(User)
            .where(User.id == user_id)
            .values(hashed_password=hashed_password)
            .returning(User.id)
        )
        return row is not None

    async def delete(self, user_id: int) -> bool:
        """Deletes the user; their posts go with them (ON DELETE CASCADE)."""
        row = await self._one(delete(User).where(User.id == user_id).returning(User.id))
        return row is not None

    async def credentials(self, login: str) -> Credentials | None:
        """The user whose email or username is `login` (case-insensitively), with the hash."""
        row = await self._one(
            select(*USER_COLUMNS, User.hashed_password)
            .where(
                or_(
                    func.lower(User.email) == func.lower(login),
                    func.lower(User.username) == func.lower(login),
                )
            )
            .limit(1)
        )
        if row is None:
            return None
        return Credentials(user_from_row(row), row[_WIDTH])
