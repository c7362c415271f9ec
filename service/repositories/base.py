"""What every repository shares: statements compiled once, run on the call's connection.

Every statement is built once, at import, with named bind parameters (`Query`), and compiled
for asyncpg, which keeps it prepared per connection. A call runs it on the connection of its
session (service.db.session), inside whatever transaction the session keeps: the repository
never decides that. Rows come back as asyncpg records, indexed by position.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import ColumnElement, tuple_
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.sql import Executable

from service.db.session import current_session

_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]


class Row(Protocol):
    def __getitem__(self, index: Any) -> Any: ...
    def __len__(self) -> int: ...


class Query:
    """A statement, and its SQL compiled once for asyncpg with the order of its parameters."""

    def __init__(self, statement: Executable) -> None:
        compiled: Any = statement.compile(dialect=_DIALECT)  # type: ignore[attr-defined]
        self.sql: str = compiled.string
        self._names = tuple(compiled.positiontup or ())
        self._defaults = dict(compiled.params)

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        """The values of the statement's parameters, in order, from `params` or the defaults."""
        return [params[n] if n in params else self._defaults[n] for n in self._names]


class BaseRepository:
    """Runs `Query` objects on the current call's connection. Subclasses hold the SQL."""

    async def _all(self, query: Query, **params: Any) -> Sequence[Row]:
        rows: Sequence[Row] = await current_session().fetch(query.sql, query.arguments(params))
        return rows

    async def _one(self, query: Query, **params: Any) -> Row | None:
        rows = await self._all(query, **params)
        return rows[0] if rows else None

    def _stream(self, query: Query, batch: int, **params: Any) -> AsyncIterator[Row]:
        """Rows from a server-side cursor, `batch` at a time, as fast as the caller reads.

        A cursor lives in a transaction: the call's session opens a read-only snapshot, so the
        whole stream reads one consistent state however long it lasts.
        """
        rows: AsyncIterator[Row] = current_session().cursor(
            query.sql, query.arguments(params), prefetch=batch
        )
        return rows


async def release_connection() -> None:
    """Ends the call's use of its connection for now (committing what is open); a later
    statement of the call leases one again, in a transaction of its own."""
    await current_session().release()


def newest_first_after(
    created_at: Any, id_: Any, cursor_created_at: Any, cursor_id: Any
) -> ColumnElement[bool]:
    """The keyset condition for rows after a cursor in (created_at desc, id desc) order."""
    return tuple_(created_at, id_) < tuple_(cursor_created_at, cursor_id)


def like_pattern(text: str) -> str:
    """An ILIKE pattern for "contains `text`", with % _ and \\ matching literally (ESCAPE '\\')."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
