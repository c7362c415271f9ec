"""One way to write a server interceptor: an async context manager around each call.

In grpc.aio `intercept_service` runs while the handler is being looked up, before the call
itself, so anything that must span the call (a session, a timer, error mapping) wraps the
behaviour of the RpcMethodHandler it returns. This module does that once, for unary and
server-streaming methods alike; each interceptor only says what happens around a call.
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


def wrap_handler(
    handler: Handler,
    around: Callable[[aio.ServicerContext[Any, Any]], AbstractAsyncContextManager[None]],
) -> Handler:
    if handler.unary_unary is not None:
        unary: Any = handler.unary_unary

        async def unary_unary(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            async with around(context):
                return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary,
            request_deserializer=handler.request_deserializer,
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
                    await stream(request, context)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream_writes,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )

        async def unary_stream(
            request: Any, context: aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            async with around(context):
                async for response in stream(request, context):
                    yield response

        return grpc.unary_stream_rpc_method_handler(
            unary_stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler  # client- and bidi-streaming: none in our API (reflection is one, left as is)
