"""One way to write a server interceptor: an async context manager around each call.

In grpc.aio `intercept_service` runs while the handler is being looked up, before the call
itself, so anything that must span the call (a session, a timer, error mapping) wraps the
behaviour of the RpcMethodHandler it returns. This module does that once, for unary and
server-streaming methods alike; each interceptor only says what happens around a call.

It also makes the request's parse part of the call. grpcio parses the bytes before any
interceptor runs, and a parse error there ended the call UNKNOWN with Python's exception text,
unlogged, uncounted, without a request id. Here the parse never raises: its error travels into
the call as an `Undecodable` request, and the wrapper next to the servicer raises it as
MALFORMED_REQUEST, inside every interceptor, like any other error of the call.
"""

from __future__ import annotations

import abc
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio

from service.domain.errors import MalformedRequest

if TYPE_CHECKING:  # generic only in the stubs
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler]]


class CallInterceptor(aio.ServerInterceptor, abc.ABC):  # type: ignore[type-arg]
    @functools.cached_property
    def _handlers(self) -> dict[str, Handler]:
        """Wrapped handlers by method. grpc.aio asks every interceptor for the handler on every
        call; the answer for a method never changes, so each is built once."""
        return {}

    def applies_to(self, method: str) -> bool:
        """Whether to wrap calls of `method` ("/package.Service/Method"). Default: all."""
        return True

    @abc.abstractmethod
    def around(
        self, method: str, context: aio.ServicerContext[Any, Any]
    ) -> AbstractAsyncContextManager[None]:
        """What happens around one call: code before `yield`, after it, and on exceptions."""

    def wrap(self, method: str, handler: Handler) -> Handler:
        """The handler with this interceptor's work around every call of `method`."""
        return wrap_handler(handler, lambda context: self.around(method, context))

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        method: str = handler_call_details.method
        cache = self._handlers
        cached = cache.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is not None and self.applies_to(method):
            handler = self.wrap(method, handler)
        if handler is not None:
            cache[method] = handler
        return handler


class Undecodable:
    """Stands for a request whose bytes did not decode; `problem` is the parser's word on it."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem


class _DeferringDeserializer:
    """A request deserializer whose failures become `Undecodable` requests instead."""

    __slots__ = ("_parse",)

    def __init__(self, parse: Callable[[bytes], Any]) -> None:
        self._parse = parse

    def __call__(self, data: bytes) -> Any:
        try:
            return self._parse(data)
        except Exception as error:  # protobuf's DecodeError, or whatever a parser raises
            return Undecodable(str(error))


def _decoded(request: Any) -> Any:
    if isinstance(request, Undecodable):
        raise MalformedRequest(f"the request does not decode: {request.problem}")
    return request


def _as_is(request: Any) -> Any:
    return request


def decoding(handler: Handler) -> tuple[Any, Callable[[Any], Any]]:
    """The deserializer to register for `handler`, and what to apply to each request it gives.

    Wrapping a servicer's own handler (its deserializer not yet deferring), the wrapper is the
    innermost, the one that refuses an undecodable request; outer ones pass it along.
    """
    deserialize = handler.request_deserializer
    if deserialize is not None and not isinstance(deserialize, _DeferringDeserializer):
        return _DeferringDeserializer(deserialize), _decoded
    return deserialize, _as_is


def wrap_handler(
    handler: Handler,
    around: Callable[[aio.ServicerContext[Any, Any]], AbstractAsyncContextManager[None]],
) -> Handler:
    deserialize, checked = decoding(handler)
    if handler.unary_unary is not None:
        unary: Any = handler.unary_unary

        async def unary_unary(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            async with around(context):
                return await unary(checked(request), context)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary,
            request_deserializer=deserialize,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        stream: Any = handler.unary_stream

        if not inspect.isasyncgenfunction(stream):
            # A stream written with `await context.write(...)` (grpc_health's Watch, for one):
            # a coroutine, not an async generator; wrapping it as one made Watch fail INTERNAL.
            async def unary_stream_writes(
                request: Any, context: aio.ServicerContext[Any, Any]
            ) -> None:
                async with around(context):
                    await stream(checked(request), context)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream_writes,
                request_deserializer=deserialize,
                response_serializer=handler.response_serializer,
            )

        async def unary_stream(
            request: Any, context: aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            async with around(context):
                async for response in stream(checked(request), context):
                    yield response

        return grpc.unary_stream_rpc_method_handler(
            unary_stream,
            request_deserializer=deserialize,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_unary is not None:
        # A unary method whose request is read by interceptors.arrival (with a time limit).
        one: Any = handler.stream_unary

        async def stream_unary(
            requests: AsyncIterator[Any], context: aio.ServicerContext[Any, Any]
        ) -> Any:
            async with around(context):
                return await one(requests, context)

        return grpc.stream_unary_rpc_method_handler(
            stream_unary,
            request_deserializer=deserialize,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_stream is not None and not inspect.isasyncgenfunction(handler.stream_stream):
        # A server-streaming method whose request is read by interceptors.arrival.
        many: Any = handler.stream_stream

        async def stream_stream_writes(
            requests: AsyncIterator[Any], context: aio.ServicerContext[Any, Any]
        ) -> None:
            async with around(context):
                await many(requests, context)

        return grpc.stream_stream_rpc_method_handler(
            stream_stream_writes,
            request_deserializer=deserialize,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_stream is not None and inspect.isasyncgenfunction(handler.stream_stream):
        # Reflection's ServerReflectionInfo, the one bidi stream served (none in our API).
        bidi: Any = handler.stream_stream

        async def stream_stream(
            requests: AsyncIterator[Any], context: aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            async with around(context):
                async for response in bidi((checked(r) async for r in requests), context):
                    yield response

        return grpc.stream_stream_rpc_method_handler(
            stream_stream,
            request_deserializer=deserialize,
            response_serializer=handler.response_serializer,
        )
    return handler  # client-streaming, or a bidi stream read with context.read(): none served
