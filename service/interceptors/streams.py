"""Limits for server-streaming calls: a capacity of their own, and an end to unread streams.

A stream holds a pooled connection and a snapshot for as long as it lasts, so without limits
a client could take the whole read pool (and hold back VACUUM) by opening streams and reading
nothing. Two rules stop that:

* at most `capacity` streams at once per process (a part of the read pool, so unary reads
  keep connections of their own); past it a new stream is refused RESOURCE_EXHAUSTED at once
  (StreamLimitInterceptor);
* a message the client does not take within `idle_timeout` seconds ends the stream: gRPC's
  write blocks while the client's flow-control window is full, so a write that waits that long
  means a client that stopped reading. The stream's connection and snapshot are released
  then, whatever the client does next (IdleWatchdog, run by the loop that writes a stream's
  messages: interceptors.responses).
"""

from __future__ import annotations

import asyncio
from typing import Any

from blog.v1.error_reason_pb2 import ErrorReason

from service.api import Method
from service.domain.errors import ResourceExhausted
from service.interceptors.base import Context, Proceed


class StreamLimitInterceptor:
    """A place among the process's streams for the whole call, or RESOURCE_EXHAUSTED."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self.active = 0

    async def around(self, method: Method, request: Any, context: Context, proceed: Proceed) -> Any:
        if self.active >= self._capacity:
            raise ResourceExhausted(
                f"{self._capacity} streams are already open on this server; retry with backoff",
                reason=ErrorReason.STREAMS_EXHAUSTED,
            )
        self.active += 1
        try:
            return await proceed(request, context)
        finally:
            self.active -= 1


class IdleWatchdog:
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

    def absorb(self) -> None:
        """Takes back the cancellation it sent, once the stream has been ended for it (as
        asyncio.timeout does), so that nothing later in the task sees itself cancelled."""
        if self._task is not None:
            self._task.uncancel()

    def stop(self) -> None:
        self._handle.cancel()
