"""The status code a call ended with, as the client received it, told from around the call.

The interceptors that report calls (observe: the log line and metrics; trace: the span) sit
outside the error mapping, so a call reaches them as a return, an abort or a cancellation.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from grpc import aio
from grpc._cython.cygrpc import ExecuteBatchError  # type: ignore[import-not-found]

# What grpc.aio raises when a write or the status can no longer be sent: the client cancelled,
# or its connection is gone (e.g. a stream ended for idling whose client then went away).
ClientGone = ExecuteBatchError


def received_code(
    context: aio.ServicerContext[Any, Any], error: BaseException | None
) -> grpc.StatusCode:
    """The code of a call that returned (`error` None) or raised `error`."""
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, aio.AbortError):
        code: grpc.StatusCode | None = context.code()
        return code or grpc.StatusCode.UNKNOWN
    if isinstance(error, asyncio.CancelledError):
        # gRPC cancels the call's task both when the client cancels and when the deadline
        # passes; the client saw DEADLINE_EXCEEDED in the second case.
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= 0
        return grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
    if isinstance(error, ClientGone):
        return grpc.StatusCode.CANCELLED  # nothing more reached the client
    return grpc.StatusCode.UNKNOWN
