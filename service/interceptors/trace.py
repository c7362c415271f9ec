"""A server span per API call, by the OpenTelemetry RPC conventions: the outermost interceptor.

The span joins the caller's trace when its metadata carries a W3C `traceparent` (the SDK's
propagators read it; a malformed one starts a new trace) and is current while the call runs,
so the call's statements become its children (service.db.spans) and its log lines carry its
ids (service.logs). A stream is one span from the request to its last message. Health and
reflection are not traced. In chain only when tracing is on (service.tracing).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
from grpc import aio
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes

from service.api import API_METHODS
from service.interceptors.base import CallInterceptor
from service.interceptors.outcome import received_code

# The codes a server span reports as an error (semantic conventions, gRPC): the server's
# faults, not the client's (NOT_FOUND, INVALID_ARGUMENT, ... leave the status unset).
SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


# What the propagators read (W3C trace context and baggage, the SDK's default OTEL_PROPAGATORS).
_PROPAGATED = frozenset(propagate.get_global_textmap().fields)


def _attributes(method: str) -> Attributes:
    service, name = method[1:].split("/", 1)
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


class TraceInterceptor(CallInterceptor):
    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer
        self._method_attributes = {method: _attributes(method) for method in API_METHODS}

    def applies_to(self, method: str) -> bool:
        return method in API_METHODS

    @asynccontextmanager
    async def around(
        self, method: str, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        metadata = context.invocation_metadata() or ()
        # Most calls carry no trace context: no carrier to build and parse for them.
        parent = (
            propagate.extract({key: value for key, value in metadata})
            if any(key in _PROPAGATED for key, _ in metadata)
            else None
        )
        span = self._tracer.start_span(
            method[1:],  # "blog.v1.UserService/GetUser"
            context=parent,
            kind=SpanKind.SERVER,
            attributes=self._method_attributes[method],
        )
        if not span.is_recording():
            # Not sampled: nothing is exported, so nothing below needs to see the span (the
            # statements and log lines look for a recording one). The cheap path of 1 %.
            yield
            return
        current = trace.set_span_in_context(span, parent)
        token = otel_context.attach(current)
        error: BaseException | None = None
        try:
            yield
        except BaseException as raised:
            error = raised
            raise
        finally:
            code = received_code(context, error)
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code in SERVER_ERRORS:
                span.set_status(Status(StatusCode.ERROR, code.name))
            span.end()
            # A stream stopped by gRPC at a `yield` is closed later by asyncio, in another
            # context, where there is nothing to detach (and detaching would log an error).
            if otel_context.get_current() is current:
                otel_context.detach(token)
