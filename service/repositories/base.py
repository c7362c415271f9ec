"""What every repository shares: statements compiled once, run on the call's session.

Every statement is built once, at import, with named bind parameters (`Query`). Each call
runs it one of two ways, decided by the call's session, never by the repository method:

* in a read-only call the session's connection is an autocommit one that PostgreSQL keeps
  read-only, so there is no transaction for SQLAlchemy to manage: the SQL compiled once is
  sent straight to asyncpg (which keeps it prepared per connection). One round trip, and
  none of the ORM's per-statement work, which dominates a primary-key read otherwise.
* in a writing call the statement runs on the session's connection (Core execution), inside
  the call's transaction (BEGIN ... COMMIT/ROLLBACK owned by the session interceptor).

Either way a row reads the same: a tuple-like record indexed by position.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import ColumnElement, tuple_
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Executable

from service.db.session import current_session, driver_connection

# Set in AsyncSession.info by the read session factory when its connections autocommit.
DIRECT = "direct_driver_reads"
_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]


class Row(Protocol):
    def __getitem__(self, index: Any) -> Any: ...
    def __len__(self) -> int: ...


class Query:
    """A statement, and its SQL compiled once for asyncpg with the order of its parameters."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        compiled: Any = statement.compile(dialect=_DIALECT)  # type: ignore[attr-defined]
        self.sql = compiled.string
        self._names = tuple(compiled.positiontup or ())
        self._defaults = dict(compiled.params)

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        """The values of the statement's parameters, in order, from `params` or the defaults."""
        return [params[n] if n in params else self._defaults[n] for n in self._names]

    def named(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Only the parameters the statement takes (callers may pass unused ones)."""
        return dict(zip(self._names, self.arguments(params), strict=True))


class BaseRepository:
    """Runs `Query` objects on the current call's session. Subclasses hold the SQL."""

    @property
    def session(self) -> AsyncSession:
        return current_session()

    async def _rows(self, query: Query, params: Mapping[str, Any]) -> Sequence[Row]:
        session = self.session
        if session.info.get(DIRECT):
            driver = await driver_connection(session)
            rows: Sequence[Row] = await driver.fetch(query.sql, *query.arguments(params))
            return rows
        # The session's connection, in the session's transaction; Core execution skips the
        # ORM's per-statement work, which these plain statements do not need.
        connection = await session.connection()
        result = await connection.execute(query.statement, query.named(params))
        return list(result.all())

    async def _one(self, query: Query, **params: Any) -> Row | None:
        rows = await self._rows(query, params)
        return rows[0] if rows else None

    async def _all(self, query: Query, **params: Any) -> Sequence[Row]:
        return await self._rows(query, params)


def newest_first_after(
    created_at: Any, id_: Any, cursor_created_at: Any, cursor_id: Any
) -> ColumnElement[bool]:
    """The keyset condition for rows after a cursor in (created_at desc, id desc) order."""
    return tuple_(created_at, id_) < tuple_(cursor_created_at, cursor_id)


def like_pattern(text: str) -> str:
    """An ILIKE pattern for "contains `text`", with % _ and \\ matching literally (ESCAPE '\\')."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
