"""What every repository shares: statements compiled once, run on the call's connection.

Every statement is built once, at import, with named bind parameters, and compiled for asyncpg
(`Query`), which keeps it prepared per connection. A call runs it on the connection of its
session (service.db.session), inside whatever transaction the session keeps: the repository
never decides that. This skips SQLAlchemy's per-execution work, which costs more CPU than our
statements do (docs/benchmarks.md); `Query` keeps the checks SQLAlchemy would have made.

How to write a new query:

1. Build the statement with SQLAlchemy Core at module level, one `bindparam("name")` per
   value the call supplies: `_BY_ID = Query(select(*USER.columns).where(User.id == bindparam("row_id")))`.
   Shapes that depend on which filters a call has are built by a function under
   `functools.cache` (one compiled statement per shape, never one per call).
2. Select a record's columns with its `Columns` (e.g. `USER = Columns(UserRecord, User)`):
   the select list is derived from the record's fields, so a field added to the record and
   the model is selected and read everywhere, in the same order, with no list to edit.
3. Run it with `self._all` / `self._one` / `self._stream`, passing the parameters of the
   shape picked, by keyword (a filter's value passed to a shape without it is refused), and
   read rows with `USER.read(row)`.

What `Query` refuses:

* at import, a statement that SQLAlchemy rewrites per execution ("post-compile" parameters:
  `in_()` of a list or of `bindparam(..., expanding=True)`, `literal_execute=True`) or whose
  parameter computes its value (`callable_`): compiled once, either would run wrong. For a list,
  write `column == func.any(bindparam("ids", type_=ARRAY(BigInteger)))`, i.e. `= ANY($1)`, which
  takes the whole list as one array parameter and one prepared plan;
* at call time, a parameter the statement does not have, or a missing one (TypeError): only a
  parameter that carries a value in the statement (e.g. `.limit(1)`, `version + 1`) may be
  left out.

And it applies the type processing SQLAlchemy would: the bind and result processors of the
parameters' and columns' types for the asyncpg dialect (e.g. `Boolean` turns 1 into True and
refuses "yes"; `ARRAY` lists its items). Of our column types only those two have processors
for asyncpg; the others (integers, strings, timestamps, UUID, bytea, interval) pass as they
are. Which positions need one is worked out at import, so a call whose types need none (most
of them) pays for a set comparison and a list build and nothing else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import (
    ColumnElement,
    Update,
    bindparam,
    func,
    inspect,
    literal_column,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.sql import Executable

from service.db.session import current_session

_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]

R = TypeVar("R")
Processor = Callable[[Any], Any]


class Row(Protocol):
    def __getitem__(self, index: Any) -> Any: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Any]: ...


def _positions(processors: Iterable[Processor | None]) -> tuple[tuple[int, Processor], ...]:
    return tuple((i, p) for i, p in enumerate(processors) if p is not None)


class Query:
    """A statement, and its SQL compiled once for asyncpg with the order of its parameters."""

    def __init__(self, statement: Executable) -> None:
        compiled: Any = statement.compile(dialect=_DIALECT)  # type: ignore[attr-defined]
        self.sql: str = compiled.string
        # Parameter names in the order of $1, $2...; each name once, however often it is used.
        names: tuple[str, ...] = tuple(compiled.positiontup or ())
        binds = [compiled.binds[name] for name in names]
        named = list(zip(names, binds, strict=True))
        deferred = compiled.post_compile_params | compiled.literal_execute_params
        if deferred:
            raise ValueError(
                f"parameters {_listed(n for n, b in named if b in deferred)} are rendered per"
                " execution (in_() of a list, expanding or literal_execute), which a statement"
                " compiled once cannot do: pass the list as one array parameter,"
                ' `column == func.any(bindparam("ids", type_=ARRAY(BigInteger)))`'
            )
        if computed := [n for n, b in named if b.callable is not None]:
            raise ValueError(
                f"parameters {_listed(computed)} compute their value (callable_): compiled"
                " once, it would be computed once, at import; pass the value at call time"
            )
        self._names = names
        self._accepted = frozenset(names)
        self._required = frozenset(n for n, b in named if b.required)
        # (name, value) in parameter order; the value is used when the call passes none.
        self._defaults = tuple((n, None if b.required else b.value) for n, b in named)
        self._bind_processors = _positions(
            b.type.dialect_impl(_DIALECT).bind_processor(_DIALECT) for b in binds
        )
        columns = getattr(statement, "exported_columns", ())
        result = _positions(
            c.type.dialect_impl(_DIALECT).result_processor(_DIALECT, None) for c in columns
        )
        self.process_row: Callable[[Row], Row] | None = _row_processor(result) if result else None

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        """The values of the statement's parameters, in order, from `params` or the defaults."""
        keys = params.keys()
        if keys == self._accepted:  # the usual call: every parameter, none left to default
            values = [params[name] for name in self._names]
        elif self._required <= keys <= self._accepted:
            values = [params.get(name, default) for name, default in self._defaults]
        else:
            raise TypeError(self._mismatch(keys))
        for position, process in self._bind_processors:
            values[position] = process(values[position])
        return values

    def _mismatch(self, keys: Iterable[str]) -> str:
        given = set(keys)
        problems = []
        if unknown := given - self._accepted:
            problems.append(f"unknown parameters {_listed(unknown)}")
        if missing := self._required - given:
            problems.append(f"missing parameters {_listed(missing)}")
        return (
            f"{' and '.join(problems)} for {self.sql[:60]!r}..."
            f" (it takes {_listed(self._accepted) or 'none'})"
        )


def _listed(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))


def _row_processor(steps: tuple[tuple[int, Processor], ...]) -> Callable[[Row], Row]:
    def process(row: Row) -> Row:
        values = list(row)
        for position, convert in steps:
            values[position] = convert(values[position])
        return values

    return process


class Columns(Generic[R]):
    """The columns a record type is read from, declared once: the record's fields.

    Each field names a column of `model` (same name), in the field order; fields that are not
    columns (a post's author: another record read from the same row) are listed in `nested`
    and come last. `columns` is the select list, `read` turns a row (or a part of one, from
    `start`) into a record by position, which costs what a tuple unpacking costs.
    """

    def __init__(self, record: type[R], model: type[Any], *, nested: Sequence[str] = ()) -> None:
        names = [f.name for f in dataclasses.fields(record)]  # type: ignore[arg-type]
        mapped = inspect(model).columns
        columns = [name for name in names if name not in nested]
        if names != columns + list(nested):
            raise ValueError(f"{record.__name__}: nested fields {nested} must come last")
        unknown = [name for name in columns if name not in mapped]
        if unknown:
            raise ValueError(
                f"{record.__name__}.{', '.join(unknown)}: not a column of {model.__name__};"
                " add it to the model (and a migration) or to `nested`"
            )
        self.record = record
        self.columns: tuple[Any, ...] = tuple(getattr(model, name) for name in columns)
        self.width = len(columns)

    def read(self, row: Row, start: int = 0, **nested: Any) -> R:
        return self.record(*row[start : start + self.width], **nested)


class BaseRepository:
    """Runs `Query` objects on the current call's connection. Subclasses hold the SQL."""

    async def _all(self, query: Query, **params: Any) -> Sequence[Row]:
        rows: Sequence[Row] = await current_session().fetch(query.sql, query.arguments(params))
        if query.process_row is not None:
            rows = [query.process_row(row) for row in rows]
        return rows

    async def _one(self, query: Query, **params: Any) -> Row | None:
        rows = await self._all(query, **params)
        return rows[0] if rows else None

    async def _page(
        self, shape: Callable[[int | None], Query], limit: int, searching: bool, **params: Any
    ) -> Sequence[Row]:
        """At most `limit` rows of a list statement, `shape(written LIMIT or None)`, whose
        LIMIT is written into it or sent as the parameter `limit` (see written_limit)."""
        written = written_limit(limit, searching=searching)
        if written is None:
            params["limit"] = limit
        rows = await self._all(shape(written), **params)
        return rows[:limit]

    def _stream(self, query: Query, batch: int, **params: Any) -> AsyncIterator[Row]:
        """Rows from a server-side cursor, `batch` at a time, as fast as the caller reads.

        A cursor lives in a transaction: the call's session opens a read-only snapshot, so the
        whole stream reads one consistent state however long it lasts.
        """
        rows: AsyncIterator[Row] = current_session().cursor(
            query.sql, query.arguments(params), prefetch=batch
        )
        if query.process_row is None:
            return rows
        return _processed(rows, query.process_row)


async def _processed(rows: AsyncIterator[Row], process: Callable[[Row], Row]) -> AsyncIterator[Row]:
    async for row in rows:
        yield process(row)


async def release_connection() -> None:
    """Ends the call's use of its connection for now (committing what is open); a later
    statement of the call leases one again, in a transaction of its own."""
    await current_session().release()


def commits_alone() -> None:
    """The call's next statement may run as its own transaction (domain.ports.CommitsAlone)."""
    current_session().run_alone()


def versioned_update(model: Any, fields: Sequence[str], *, conditional: bool) -> Update:
    """UPDATE of row :row_id setting each of `fields` from :new_<field>, bumping its version
    and updated_at; when `conditional`, only while its version is :expected_version (AIP-154).
    Its parameters are `update_parameters`'."""
    statement = (
        update(model)
        .where(model.id == bindparam("row_id"))
        .values(
            {
                **{name: bindparam(f"new_{name}") for name in fields},
                "version": model.version + 1,
                "updated_at": func.now(),
            }
        )
    )
    if conditional:
        statement = statement.where(model.version == bindparam("expected_version"))
    return statement


def update_parameters(
    row_id: int, values: Mapping[str, Any], expected_version: int | None
) -> dict[str, Any]:
    """The parameters of a `versioned_update` of `values` to row `row_id`."""
    params = {f"new_{name}": value for name, value in values.items()}
    params["row_id"] = row_id
    if expected_version is not None:
        params["expected_version"] = expected_version
    return params


def newest_first_after(
    created_at: Any, id_: Any, cursor_created_at: Any, cursor_id: Any
) -> ColumnElement[bool]:
    """The keyset condition for rows after a cursor in (created_at desc, id desc) order."""
    return tuple_(created_at, id_) < tuple_(cursor_created_at, cursor_id)


# Page sizes up to 100 (the usual ones) get a statement each with their exact LIMIT; larger
# ones share one per power of two (128 ... 1024), so a shape has at most 105 statements.
EXACT_LIMITS = 101


def written_limit(limit: int, *, searching: bool) -> int | None:
    """The LIMIT to write into a list statement for a page of `limit` rows; None: send `limit`
    as the statement's parameter. The caller keeps the first `limit` rows it reads.

    A LIMIT sent as a parameter keeps PostgreSQL from ever using the prepared statement's
    generic plan (it costs an unknown limit as a tenth of the table), so every call plans the
    statement afresh: half of what a ListPosts page costs the database (docs/benchmarks.md).
    Written into the statement, the cached plan serves every call. Exact up to EXACT_LIMITS,
    since every row read costs the event loop its decoding; rounded up to a power of two
    above, which bounds the statements. A search keeps its parameter, and so a plan made for
    its pattern: a rare one is best served by the trigram indexes, a common one by the
    newest-first walk that stops after a page.
    """
    if searching:
        return None
    return limit if limit <= EXACT_LIMITS else 1 << (limit - 1).bit_length()


def limit_clause(written: int | None) -> ColumnElement[Any]:
    """A list statement's LIMIT: `written` into its text (see written_limit), or the parameter
    `limit`. (`.limit(64)` would not do: SQLAlchemy sends a number as a parameter too.)"""
    return bindparam("limit") if written is None else literal_column(str(int(written)))


def like_pattern(text: str) -> str:
    """An ILIKE pattern for "contains `text`", with % _ and \\ matching literally (ESCAPE '\\')."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
