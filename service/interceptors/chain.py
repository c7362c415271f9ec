"""The server's one interceptor chain: `build_chain` says which layers, in which order, for
which methods; the server and the tests both build theirs with it.

A call runs through the layers outermost first:

    trace       a server span (API methods, only when tracing is on)
    observe     request id, the call's log line, its metrics (every method)
    errors      domain and database errors become statuses (every method)
    arrival     reads the request, in time (every method with one request message)
    admission   MAX_CONCURRENT_RPCS, and refusal once shutting down (API methods)
    auth        bearer token (API methods, only when AUTH_TOKENS is set)
    streams     the streams' own capacity (API streams)
    deadline    DEFAULT_TIMEOUT_SECONDS for calls without a deadline (unary API methods)
    session     the call's database session and transaction (API methods)
    responses   the servicer; its responses serialized and measured, a stream's written one
                by one under the idle timeout (every method)

"Which methods" is a selector from service.api per layer, decided here and nowhere else.

grpc.aio asks every interceptor it is given for the handler on every call, and each layer
that wraps the handler adds a wrapper of its own. So the server gets one interceptor, this
`Chain`, and the chain composes, on a method's first call, the layers that apply to it into
one handler, kept for every later call: a call then costs one dictionary lookup and one
coroutine per layer it passes (interceptors.base), the layers bound to each other by
functools.partial (no Python call of their own).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from grpc import aio

from service.api import (
    Method,
    Selector,
    api_methods,
    api_streaming_methods,
    api_unary_methods,
    describe,
    every_method,
    single_request_methods,
)
from service.interceptors.admission import AdmissionInterceptor
from service.interceptors.arrival import RequestArrivalInterceptor
from service.interceptors.auth import AuthInterceptor
from service.interceptors.base import (
    DeferringDeserializer,
    Handler,
    Interceptor,
    Proceed,
)
from service.interceptors.deadline import DefaultDeadlineInterceptor
from service.interceptors.errors import ErrorInterceptor
from service.interceptors.observe import ObserveInterceptor
from service.interceptors.responses import Responses
from service.interceptors.session import SessionInterceptor
from service.interceptors.streams import StreamLimitInterceptor
from service.interceptors.timers import Timers
from service.interceptors.trace import TraceInterceptor
from service.servicers.sizing import response_limit

if TYPE_CHECKING:
    from service.db.engine import Database
    from service.settings import Settings
    from service.tracing import Tracing

T = TypeVar("T")
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]


@dataclass(frozen=True, slots=True)
class Layer:
    """One interceptor of the chain and the methods it applies to."""

    interceptor: Interceptor
    selects: Selector


def _link(interceptor: Interceptor, method: Method, proceed: Proceed) -> Proceed:
    """`interceptor` around `proceed` for calls of `method`: called with (request, context).

    A partial, not a closure: functools.partial is C, so a layer costs a call its coroutine
    and no Python function that only passes the arguments on. Of the class's function, not
    the bound method: gRPC asks on every call whether the outermost is a coroutine function,
    and a plain function inside the partial answers that in the fewest steps."""
    return partial(type(interceptor).around, interceptor, method, proceed=proceed)


class Chain(aio.ServerInterceptor):  # type: ignore[type-arg]
    """The layers, outermost first, composed into one handler per method."""

    def __init__(self, layers: Sequence[Layer], responses: Responses) -> None:
        self.layers = tuple(layers)
        self._responses = responses
        self._handlers: dict[str, Handler] = {}

    def layer(self, kind: type[T]) -> T:
        """The chain's interceptor of type `kind` (the server's handle on admission, say)."""
        for layer in self.layers:
            if isinstance(layer.interceptor, kind):
                return layer.interceptor
        raise LookupError(f"no {kind.__name__} in the chain")

    def applied(self, method: Method) -> list[Interceptor]:
        """The interceptors a call of `method` runs through, outermost first."""
        return [layer.interceptor for layer in self.layers if layer.selects(method)]

    async def intercept_service(  # type: ignore[override]  # None: no such method
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        path: str = handler_call_details.method
        handler = self._handlers.get(path)
        if handler is None:
            served = await continuation(handler_call_details)
            if served is None:
                return None  # no such method: gRPC answers UNIMPLEMENTED (and nothing is kept)
            handler = self._handlers[path] = self.compose(path, served)
        return handler

    def compose(self, path: str, served: Handler) -> Handler:
        """The handler for calls of `path`: every layer that applies, around the servicer's."""
        method = describe(
            path, request_streaming=served.request_streaming, streaming=served.response_streaming
        )
        interceptors = self.applied(method)
        step, serializer = self._responses.innermost(served)
        for interceptor in reversed(interceptors):
            step = _link(interceptor, method, step)

        # gRPC runs a handler that is not a coroutine function in a thread: every layer's
        # `around` and the innermost step are coroutine functions, and a partial of one is.
        if not inspect.iscoroutinefunction(step):
            raise TypeError(f"the handler of {path} is not a coroutine function")
        handle = step
        parse = served.request_deserializer
        options: dict[str, Any] = {
            "request_deserializer": DeferringDeserializer(parse) if parse else None,
            "response_serializer": serializer,
        }
        # A layer that reads the request itself (arrival) gets the request stream.
        reads = served.request_streaming or any(
            getattr(interceptor, "reads_request", False) for interceptor in interceptors
        )
        if method.streaming:
            if reads:
                return grpc.stream_stream_rpc_method_handler(handle, **options)
            return grpc.unary_stream_rpc_method_handler(handle, **options)
        if reads:
            return grpc.stream_unary_rpc_method_handler(handle, **options)
        return grpc.unary_unary_rpc_method_handler(handle, **options)


def build_chain(settings: Settings, database: Database, tracing: Tracing | None = None) -> Chain:
    """The chain the server runs (the module's docstring lists it), from the settings."""
    timeout = settings.default_timeout_seconds
    timers = Timers(timeout)  # one for arrival and deadline: the same timeout
    layers: list[Layer] = []
    if tracing is not None:
        layers.append(Layer(TraceInterceptor(tracing), api_methods))
    layers += [
        Layer(ObserveInterceptor(metrics_enabled=settings.metrics_port is not None), every_method),
        Layer(ErrorInterceptor(), every_method),
        Layer(RequestArrivalInterceptor(timers), single_request_methods),
        Layer(AdmissionInterceptor(settings.max_concurrent_rpcs), api_methods),
    ]
    if settings.tokens:
        layers.append(Layer(AuthInterceptor(settings.tokens), api_methods))
    layers += [
        Layer(StreamLimitInterceptor(settings.stream_capacity), api_streaming_methods),
        Layer(DefaultDeadlineInterceptor(timers), api_unary_methods),
        Layer(SessionInterceptor(database, timeout), api_methods),
    ]
    responses = Responses(
        limit=response_limit(settings.grpc_max_message_bytes),
        idle_timeout=settings.stream_idle_timeout_seconds,
    )
    return Chain(layers, responses)
