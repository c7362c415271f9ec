"""Counting the SQL statements the server sends, at the driver: what N+1 and round-trip tests see."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import event

from service.server import Server

_NOT_COUNTED = re.compile(
    r"^\s*(BEGIN|COMMIT|ROLLBACK|START TRANSACTION|SAVEPOINT|RELEASE|SELECT 1|SELECT \$1)\b"
    r"|pg_stat_statements",
    re.IGNORECASE,
)


_HEALTH_PROBE = re.compile(r"^\s*SELECT 1\s*$", re.IGNORECASE)


class StatementCounter:
    """Statements the server sends to PostgreSQL, whichever layer sends them."""

    def __init__(self, server: Server) -> None:
        self._engines = server.database.engines
        self.sent: list[tuple[int, str]] = []  # (which connection, statement)
        self._loggers: dict[int, tuple[Any, Callable[[Any], None]]] = {}

    @property
    def statements(self) -> list[str]:
        return [statement for _, statement in self.sent]

    def _checkout(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        driver = dbapi_connection.driver_connection
        if id(driver) not in self._loggers:

            def logged(query: Any, connection: int = id(driver)) -> None:
                self.sent.append((connection, query.query))

            driver.add_query_logger(logged)
            self._loggers[id(driver)] = (driver, logged)

    def counted(self) -> list[str]:
        return [s for s in self.statements if not _NOT_COUNTED.search(s)]

    def start(self) -> None:
        for engine in self._engines:
            event.listen(engine.sync_engine.pool, "checkout", self._checkout)

    def stop(self) -> None:
        for engine in self._engines:
            event.remove(engine.sync_engine.pool, "checkout", self._checkout)
        for driver, logged in self._loggers.values():
            driver.remove_query_logger(logged)

    async def count(
        self, call: Callable[[], Awaitable[Any]], *, transaction_control: bool = False
    ) -> list[str]:
        """The statements sent while `call` runs; with BEGIN/COMMIT/ROLLBACK if asked."""
        self.sent.clear()
        await call()
        await asyncio.sleep(0.01)  # asyncpg reports queries through call_soon
        if transaction_control:
            return _without_health_probes(self.sent)
        return self.counted()


def _without_health_probes(sent: list[tuple[int, str]]) -> list[str]:
    """`sent` without the health probe's statements, which may land meanwhile: a `SELECT 1`,
    with the BEGIN just before it and the COMMIT just after it on the same connection."""
    dropped: set[int] = set()
    for i, (conn, statement) in enumerate(sent):
        if not _HEALTH_PROBE.search(statement):
            continue
        dropped.add(i)
        before = [j for j in range(i) if sent[j][0] == conn and j not in dropped]
        after = [j for j in range(i + 1, len(sent)) if sent[j][0] == conn]
        bracketed = before and after and sent[before[-1]][1].startswith("BEGIN")
        if bracketed and sent[after[0]][1].startswith("COMMIT"):
            dropped.update((before[-1], after[0]))
    return [statement for i, (_, statement) in enumerate(sent) if i not in dropped]
