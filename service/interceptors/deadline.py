"""DEFAULT_TIMEOUT_SECONDS for a unary call that carries no deadline of its own.

When time runs out the call's task is cancelled, and cancelling asyncpg's await sends
PostgreSQL a cancel request, so no statement outlives its call; this costs no round trip on
the way. The timeout (the chain's `Timers`, shared with interceptors.arrival) spans the
session's commit and the end of the call's connection (interceptors.session runs inside this
layer).

A call with a deadline (and every stream: the chain applies this layer to unary API methods
only) is cancelled by gRPC itself when its deadline passes, so no timer of ours is set for
it: a second cancellation landing while SQLAlchemy closes the connection after the first
would make it abort the connection at once, killing asyncpg's pending cancel request, and the
statement would go on waiting inside PostgreSQL (tests/test_deadlines.py).
"""

from __future__ import annotations

from typing import Any

from service.api import Method
from service.domain.errors import DeadlineExceeded
from service.interceptors.base import Context, Proceed
from service.interceptors.timers import Timers


class DefaultDeadlineInterceptor:
    def __init__(self, timers: Timers) -> None:
        self._timers = timers

    async def around(self, method: Method, request: Any, context: Context, proceed: Proceed) -> Any:
        if context.time_remaining() is not None:
            return await proceed(request, context)  # the client's deadline: gRPC enforces it
        timers = self._timers
        expiry = timers.start()
        try:
            result = await proceed(request, context)
        except BaseException as error:
            # A TimeoutError after ours expired is the timeout too (as with asyncio.timeout);
            # before it, it is one of the database's (service.db.errors).
            if timers.stop(expiry, error) or (expiry.expired and isinstance(error, TimeoutError)):
                raise DeadlineExceeded("the deadline passed before the call completed") from None
            raise
        timers.stop(expiry, None)
        return result
