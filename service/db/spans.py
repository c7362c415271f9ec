"""A child span per SQL statement of a traced call: `db.system` postgresql and the statement's
text, never its parameters (they may hold an email, a password hash, a token).

Only inside a recording span: a statement of an unsampled call, or of no call at all (the
health probe), costs one look at the current span and emits nothing. The span is not made
current (nothing runs below a statement), so a stream's cursor can hold one open across the
rows it yields without leaking it into the code that reads them.
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from sqlalchemy.engine import URL

NOTHING: AbstractContextManager[Any] = nullcontext()  # the cheapest `with`: a statement untraced
_WRITE = re.compile(r"\b(INSERT|UPDATE|DELETE)\b", re.IGNORECASE)


class _StatementSpan:
    __slots__ = ("_span",)

    def __init__(self, span: Span) -> None:
        self._span = span

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is not None and kind is not GeneratorExit:  # a reader leaving a cursor: no fault
            # The type only: a driver's message can quote the values (a unique violation's key).
            self._span.set_attribute("error.type", kind.__qualname__)
            self._span.set_status(Status(StatusCode.ERROR))
        self._span.end()


def _operation(sql: str) -> str:
    """The statement's first keyword; for `WITH ... INSERT` the write it does."""
    words = sql.upper().split(None, 1)
    if not words:
        return "SQL"
    if words[0] == "WITH":
        write = _WRITE.search(sql)
        return write.group(1).upper() if write else "SELECT"
    return words[0]


class StatementSpans:
    """Makes the spans of one database's statements (one per pool: primary or replica)."""

    def __init__(self, tracer: trace.Tracer, url: URL) -> None:
        self._tracer = tracer
        self._database = url.database or "postgres"
        self._attributes: dict[str, Any] = {"db.system": "postgresql", "db.name": self._database}
        if url.host:
            self._attributes["net.peer.name"] = url.host
            self._attributes["net.peer.port"] = url.port or 5432
        self._names: dict[str, str] = {}

    def _name(self, sql: str) -> str:
        """`SELECT blog`: the operation and the database (semantic conventions for SQL)."""
        name = self._names.get(sql)
        if name is None:
            name = self._names[sql] = f"{_operation(sql)} {self._database}"
        return name

    def __call__(self, sql: str) -> AbstractContextManager[Any]:
        """Around running `sql`: a span when the current one records, else nothing."""
        if not trace.get_current_span().is_recording():
            return NOTHING
        span = self._tracer.start_span(
            self._name(sql),
            kind=SpanKind.CLIENT,
            attributes={**self._attributes, "db.statement": sql},
        )
        return _StatementSpan(span)
