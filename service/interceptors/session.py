"""One session and one transaction per call.

Commit when the handler returns; roll back when it raises, aborts or is cancelled; always
give the connection back to the pool. NO_SIDE_EFFECTS methods get a session on the read
pool, whose connections PostgreSQL keeps read-only (service.db.session). The database's
errors go up as they are: the session decides from them what state its connection is in,
and the error interceptor what the client is told (service.interceptors.errors).
"""

from __future__ import annotations

import time
from typing import Any

from service.api import Method
from service.db.engine import Database
from service.db.session import bind_session, unbind_session
from service.domain.errors import DeadlineExceeded
from service.interceptors.base import Context, Proceed


class SessionInterceptor:
    def __init__(self, database: Database, default_timeout: float) -> None:
        self._db = database
        self._default_timeout = default_timeout  # DEFAULT_TIMEOUT_SECONDS (interceptors.deadline)

    async def around(self, method: Method, request: Any, context: Context, proceed: Proceed) -> Any:
        if method.read_only:
            session = self._db.session(read_only=True)
        else:
            # A write may run a statement alone only with time to spare (service.db.session).
            remaining = context.time_remaining()
            left = self._default_timeout if remaining is None else remaining
            session = self._db.session(read_only=False, deadline=time.monotonic() + left)
        token = bind_session(session)
        ended_by: BaseException | None = None
        try:
            response = await proceed(request, context)
            # gRPC cancels a call when its deadline passes, but on a busy loop that can come
            # late: a write whose client has already read DEADLINE_EXCEEDED must not commit.
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                raise DeadlineExceeded("the deadline passed before the call could commit")
            await session.commit()
            return response
        except BaseException as error:
            ended_by = error
            raise
        finally:
            await session.end(ended_by)
            unbind_session(token)
