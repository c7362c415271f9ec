"""What every repository shares: the call's session, statement execution, keyset paging, search."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningDelete, ReturningInsert, ReturningUpdate
from sqlalchemy.sql.elements import ColumnClause
from sqlalchemy.orm import InstrumentedAttribute

from service.db.session import current_session
from service.domain.paging import Cursor

Statement = Select[Any] | ReturningInsert[Any] | ReturningUpdate[Any] | ReturningDelete[Any]


class BaseRepository:
    """Runs statements on the current call's session. Subclasses hold the SQL."""

    @property
    def session(self) -> AsyncSession:
        return current_session()

    async def _one(self, statement: Statement, params: dict[str, Any] | None = None) -> Row[Any] | None:
        result = await self.session.execute(statement, params)
        return result.first()

    async def _all(self, statement: Statement, params: dict[str, Any] | None = None) -> Sequence[Row[Any]]:
        result = await self.session.execute(statement, params)
        return result.all()

    async def _scalar(self, statement: Any, params: dict[str, Any] | None = None) -> Any:
        result = await self.session.execute(statement, params)
        return result.scalar()


def newest_first_after(
    created_at: InstrumentedAttribute[Any], id_: InstrumentedAttribute[Any], cursor: Cursor | None
) -> list[ColumnElement[bool]]:
    """The keyset condition for the page after `cursor` in (created_at desc, id desc) order."""
    if cursor is None:
        return []
    return [tuple_(created_at, id_) < tuple_(cursor.created_at, cursor.id)]


def contains_ignoring_case(column: ColumnClause[Any] | InstrumentedAttribute[Any], text: str) -> ColumnElement[bool]:
    """`column` contains `text` case-insensitively, with % _ and \\ matching literally.

    Written as ILIKE on the bare column so the pg_trgm GIN index on it can serve it.
    """
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.ilike(f"%{escaped}%", escape="\\")
