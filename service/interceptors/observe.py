"""Request ids, the one log line per call, and call metrics: the outermost interceptor."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import grpc

from service import logs, metrics
from service.api import Method
from service.interceptors.base import Context, Proceed
from service.interceptors.outcome import received_code

log = logging.getLogger("service.calls")

REQUEST_ID_HEADER = "x-request-id"
_MAX_REQUEST_ID = 128


def _incoming_request_id(context: Context) -> str | None:
    """The client's id when it is 1..128 printable ASCII characters, the only ones a gRPC
    metadata value may hold: any other is replaced, since echoing it would fail the call at
    its very end, after the transaction committed (some clients, grpcurl for one, send UTF-8)."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str):
            value = value.strip()
            if 0 < len(value) <= _MAX_REQUEST_ID and value.isascii() and value.isprintable():
                return value
    return None


class ObserveInterceptor:
    def __init__(self, *, metrics_enabled: bool) -> None:
        self._metrics_enabled = metrics_enabled
        self._method_metrics: dict[str, metrics.MethodMetrics | None] = {}

    def _metrics_of(self, method: Method) -> metrics.MethodMetrics | None:
        """The method's series, built on its first call; None when metrics are off."""
        try:
            return self._method_metrics[method.path]
        except KeyError:
            found = None
            if self._metrics_enabled:
                kind = "server_stream" if method.streaming else "unary"
                found = metrics.MethodMetrics(kind, method.service, method.name)
            self._method_metrics[method.path] = found
            return found

    async def around(self, method: Method, request: Any, context: Context, proceed: Proceed) -> Any:
        rid = _incoming_request_id(context) or os.urandom(16).hex()  # as random as uuid4, cheaper
        token = logs.request_id.set(rid)
        series = self._metrics_of(method)
        if series is not None:
            series.started.inc()
        start = time.perf_counter()
        error: BaseException | None = None
        try:
            # Trailing metadata costs nothing extra: it rides on the status the call ends with
            # anyway (initial metadata would be one more batch on the wire for every call).
            context.set_trailing_metadata(((REQUEST_ID_HEADER, rid),))
            return await proceed(request, context)
        except BaseException as raised:
            error = raised
            raise
        finally:
            elapsed = time.perf_counter() - start
            code = received_code(context, error)
            # `_name_`, the member's name (enum's documented attribute): `.name` is a property,
            # two Python calls a call.
            code_name = code._name_ if isinstance(code, grpc.StatusCode) else str(code)
            if series is not None:
                series.handled(code).inc()
                series.handling_seconds.observe(elapsed)
            log.info(
                "%s %s %.1fms",
                method.path,
                code_name,
                elapsed * 1000,
                extra={
                    "method": method.path,
                    "code": code_name,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )
            try:  # noqa: SIM105 (contextlib.suppress: three Python calls more per call)
                logs.request_id.reset(token)
            except ValueError:  # a call finalized in another context: see db.session
                pass
