"""One session and one transaction per call, bounded by the call's deadline.

Commit when the handler returns; roll back when it raises, aborts or is cancelled; always
give the connection back to the pool. NO_SIDE_EFFECTS methods get a session on the read
pool, whose connections PostgreSQL keeps read-only (service.db.session).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from grpc import aio

from service.api import API_METHODS, READ_ONLY_METHODS, STREAMING_METHODS
from service.db import errors as db_errors
from service.db.engine import Database
from service.db.session import bind_session, unbind_session
from service.domain.errors import DeadlineExceeded, DomainError
from service.interceptors.base import CallInterceptor


class SessionInterceptor(CallInterceptor):
    def __init__(self, database: Database, default_timeout: float) -> None:
        self._db = database
        self._default_timeout = default_timeout

    def applies_to(self, method: str) -> bool:
        return method in API_METHODS

    def _budget(self, method: str, context: aio.ServicerContext[Any, Any]) -> float | None:
        """Seconds our own timer gives the call: DEFAULT_TIMEOUT_SECONDS when it has no deadline.

        When time runs out the call's task is cancelled, and cancelling asyncpg's await sends
        PostgreSQL a cancel request, so no statement outlives its call; this costs no round
        trip on the way. A call with a deadline (and every stream) is cancelled by gRPC itself
        when its deadline passes, so no timer of ours is set for it: a second cancellation
        landing while SQLAlchemy closes the connection after the first would make it abort
        the connection at once, killing asyncpg's pending cancel request, and the statement
        would go on waiting inside PostgreSQL (tests/test_deadlines.py).
        """
        if method in STREAMING_METHODS or context.time_remaining() is not None:
            return None
        return self._default_timeout

    @asynccontextmanager
    async def around(
        self, method: str, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        session = self._db.session(read_only=method in READ_ONLY_METHODS)
        token = bind_session(session)
        deadline = asyncio.timeout(self._budget(method, context))
        ended_by: BaseException | None = None
        try:
            async with deadline:
                yield
                # gRPC cancels a call when its deadline passes, but on a busy loop that can come
                # late: a write whose client has already read DEADLINE_EXCEEDED must not commit.
                remaining = context.time_remaining()
                if remaining is not None and remaining <= 0:
                    raise DeadlineExceeded("the deadline passed before the call could commit")
                await session.commit()
        except BaseException as error:
            # The session decides from this what state its connection is in (service.db.session).
            ended_by = error
            if isinstance(error, DomainError):
                raise
            if isinstance(error, TimeoutError) and deadline.expired():
                raise DeadlineExceeded("the deadline passed before the call completed") from None
            translated = db_errors.translate(error) if isinstance(error, Exception) else None
            if translated is not None and translated is not error:
                raise translated from error
            raise
        finally:
            await session.end(ended_by)
            unbind_session(token)
