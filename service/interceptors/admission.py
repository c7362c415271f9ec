"""Admission: past MAX_CONCURRENT_RPCS API calls in progress, a new call is refused at once.

A burst larger than the process can serve then ends RESOURCE_EXHAUSTED (reason
SERVER_OVERLOADED) for its excess, with ErrorInfo, a log line and a metric like any call,
instead of queueing for the pool until it times out. grpc.aio's own `maximum_concurrent_rpcs`
stays behind this as a backstop (service.server), for calls that never reach an interceptor.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from grpc import aio

from service.api import API_METHODS
from service.domain.errors import ResourceExhausted
from service.interceptors.base import CallInterceptor


class AdmissionInterceptor(CallInterceptor):
    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self.active = 0

    def applies_to(self, method: str) -> bool:
        return method in API_METHODS

    @asynccontextmanager
    async def around(
        self, method: str, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        if self.active >= self._capacity:
            raise ResourceExhausted(
                f"the server is serving {self._capacity} calls already; retry with backoff",
                reason="SERVER_OVERLOADED",
            )
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
