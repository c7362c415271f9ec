"""Limits for server-streaming calls: a capacity of their own, and an end to unread streams.

A stream holds a pooled connection and a snapshot for as long as it lasts, so without limits
a client could take the whole read pool (and hold back VACUUM) by opening streams and reading
nothing. Two rules stop that:

* at most `capacity` streams at once per process (a part of the read pool, so unary reads
  keep connections of their own); past it a new stream is refused RESOURCE_EXHAUSTED at once;
* a message the client does not take within `idle_timeout` seconds ends the stream: gRPC's
  write blocks while the client's flow-control window is full, so a write that waits that long
  means a client that stopped reading. The stream's connection and snapshot are released
  then, whatever the client does next.

Messages are written with `context.write` rather than yielded, because only a write can be
timed: grpc.aio pulls a yielded message when it likes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

import grpc
from blog.v1.error_reason_pb2 import ErrorReason
from grpc import aio

from service.api import STREAMING_METHODS
from service.domain.errors import ResourceExhausted
from service.interceptors.base import CallInterceptor, Handler


class StreamLimitInterceptor(CallInterceptor):
    def __init__(self, *, capacity: int, idle_timeout: float) -> None:
        self._capacity = capacity
        self._idle_timeout = idle_timeout
        self.active = 0

    def applies_to(self, method: str) -> bool:
        return method in STREAMING_METHODS

    @asynccontextmanager
    async def around(
        self, method: str, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        """A place among the process's streams for the whole call, or RESOURCE_EXHAUSTED."""
        if self.active >= self._capacity:
            raise ResourceExhausted(
                f"{self._capacity} streams are already open on this server; retry with backoff",
                reason=ErrorReason.STREAMS_EXHAUSTED,
            )
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1

    def wrap(self, method: str, handler: Handler) -> Handler:
        stream: Any = handler.unary_stream  # the inner layers' async generator
        around = self.around
        idle_timeout = self._idle_timeout

        async def write_with_limits(request: Any, context: aio.ServicerContext[Any, Any]) -> None:
            async with around(method, context), aclosing(stream(request, context)) as messages:
                loop = asyncio.get_running_loop()
                watchdog = _IdleWatchdog(idle_timeout)
                try:
                    async for message in messages:
                        watchdog.writing_since = loop.time()
                        await context.write(message)
                        watchdog.writing_since = None
                except asyncio.CancelledError:
                    if not watchdog.fired:
                        raise  # the client cancelled, or its deadline passed
                    # Leaving the `aclosing` block closes the inner generator first, so the
                    # session (connection, snapshot) is released right now.
                    raise ResourceExhausted(
                        f"the client read nothing for {idle_timeout:g} s: stream ended",
                        reason=ErrorReason.STREAM_IDLE_TIMEOUT,
                    ) from None
                finally:
                    watchdog.stop()

        return grpc.unary_stream_rpc_method_handler(
            write_with_limits,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class _IdleWatchdog:
    """Cancels the current task once one write has waited `timeout` seconds for the client.

    Only a pending write counts: a stream whose next row takes long to find is not idle. One
    timer a quarter of the timeout apart, not a timeout per message: a stream writes thousands
    of messages a second, and all a message costs is noting when its write began.
    """

    __slots__ = ("_handle", "_task", "_timeout", "fired", "writing_since")

    def __init__(self, timeout: float) -> None:
        self._task = asyncio.current_task()
        self._timeout = timeout
        self.fired = False
        self.writing_since: float | None = None
        self._handle = asyncio.get_running_loop().call_later(timeout / 4, self._check)

    def _check(self) -> None:
        loop = asyncio.get_running_loop()
        since = self.writing_since
        if since is not None and loop.time() - since >= self._timeout and self._task is not None:
            self.fired = True
            self._task.cancel()
            return
        self._handle = loop.call_later(self._timeout / 4, self._check)

    def stop(self) -> None:
        self._handle.cancel()
