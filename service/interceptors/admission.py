"""Admission: whether a new API call may start. One count of the calls in flight serves both
rules that refuse a call before it does anything:

* over capacity (MAX_CONCURRENT_RPCS in progress): RESOURCE_EXHAUSTED, reason
  SERVER_OVERLOADED, with ErrorInfo, a log line and a metric like any call, instead of queueing
  for the pool until it times out. grpc.aio's own `maximum_concurrent_rpcs` stays behind this
  as a backstop (service.server), for calls that never reach an interceptor.
* shutting down (the gate is closed): UNAVAILABLE, reason SHUTTING_DOWN. grpc.aio's
  `server.stop()` cancels every call that gRPC core has received but the application has not
  yet picked up (grpc/grpc#41785): under load that is most of the calls sent in the last
  moments, and their clients read CANCELLED, though nothing cancelled them and they never ran.
  So the server closes this gate first: calls that arrive are still picked up, and refused here
  (they never started, so any client may retry them elsewhere), while the ones that started run
  to their end. Only when none is left, and none has arrived for a moment, does the server call
  `stop()`, which then has nothing queued to cancel.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from blog.v1.error_reason_pb2 import ErrorReason

from service.api import Method
from service.domain.errors import ResourceExhausted, ShuttingDown
from service.interceptors.base import Context, Proceed

# How long no new call may arrive before the queue inside gRPC core counts as empty: a call
# received by core is picked up by the event loop within milliseconds unless the loop is busy,
# and it is not busy once every started call has finished.
QUIET_SECONDS = 0.25
_POLL_SECONDS = 0.02


class AdmissionInterceptor:
    """For API methods only (service.interceptors.chain): balancers go on reading NOT_SERVING
    during shutdown, and a Watch stream that lasts until the end is not a call to wait for."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._open = True
        self._last_arrival = 0.0
        self.active = 0

    def close(self) -> None:
        """From now on, refuse new calls UNAVAILABLE (SHUTTING_DOWN)."""
        self._open = False
        self._last_arrival = time.monotonic()

    async def settled(self, within: float) -> bool:
        """Waits until no call is in flight and none arrived for QUIET_SECONDS; False if
        `within` runs out first."""
        deadline = time.monotonic() + within
        while True:
            now = time.monotonic()
            if self.active == 0 and now - self._last_arrival >= QUIET_SECONDS:
                return True
            if now >= deadline:
                return False
            await asyncio.sleep(min(_POLL_SECONDS, deadline - now))

    async def around(self, method: Method, request: Any, context: Context, proceed: Proceed) -> Any:
        if not self._open:
            self._last_arrival = time.monotonic()
            raise ShuttingDown(
                "the server is shutting down and did not start this call; retry it elsewhere"
            )
        if self.active >= self._capacity:
            raise ResourceExhausted(
                f"the server is serving {self._capacity} calls already; retry with backoff",
                reason=ErrorReason.SERVER_OVERLOADED,
            )
        self.active += 1
        try:
            return await proceed(request, context)
        finally:
            self.active -= 1
