"""A call's request must arrive in time: a stream opened and never sent a request is reset.

grpc.aio reads a unary method's request before any interceptor or handler runs, and waits for
it as long as the client likes: a client (with or without a token) could open thousands of
streams that send headers and no body, each one holding a call in progress. This layer takes
the read over: the chain registers each method it applies to as request-streaming
(`reads_request`), and this layer reads the one request within DEFAULT_TIMEOUT_SECONDS (the
chain's `Timers`, shared with interceptors.deadline) and hands it to the inner layers. A
request that does not come in time ends the call DEADLINE_EXCEEDED (reason REQUEST_TIMEOUT),
and gRPC resets the stream; one that never comes (END_STREAM at once) is MALFORMED_REQUEST.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from blog.v1.error_reason_pb2 import ErrorReason

from service.api import Method
from service.domain.errors import DeadlineExceeded, MalformedRequest
from service.interceptors.base import Context, Proceed
from service.interceptors.timers import Timers


class RequestArrivalInterceptor:
    reads_request = True  # the chain hands this layer the request stream, not a message

    def __init__(self, timers: Timers) -> None:
        self._timers = timers

    async def around(
        self, method: Method, request: AsyncIterator[Any], context: Context, proceed: Proceed
    ) -> Any:
        timers = self._timers
        expiry = timers.start()
        try:
            message = await anext(request)
        except BaseException as error:
            # As `asyncio.timeout` around the read and `except TimeoutError` did before.
            if timers.stop(expiry, error) or isinstance(error, TimeoutError):
                raise DeadlineExceeded(
                    f"the request message did not arrive within {timers.seconds:g} s",
                    reason=ErrorReason.REQUEST_TIMEOUT,
                ) from None
            if isinstance(error, StopAsyncIteration):
                raise MalformedRequest("the call ended without a request message") from None
            raise
        timers.stop(expiry, None)
        return await proceed(message, context)
