"""Responses serialized inside the call, so one that cannot be sent fails the call itself.

gRPC serializes a response after the handler returns, when the call's transaction is already
committed and its log line written: a response over the client's limit (4 MiB by default)
then reaches the client as RESOURCE_EXHAUSTED while the write stays committed and the call is
logged OK. Serializing here, the innermost layer, inside the session, turns that into a
INVALID_ARGUMENT (reason RESPONSE_TOO_LARGE) of the call: rolled back, logged and counted
as what the client receives. It costs nothing extra: each response is serialized once, here
instead of in gRPC.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any

import grpc
from grpc import aio

from service.api import API_METHODS
from service.domain.errors import ResponseTooLarge
from service.interceptors.base import CallInterceptor, Handler


class ResponseSizeInterceptor(CallInterceptor):
    def __init__(self, limit: int) -> None:
        self._limit = limit

    def applies_to(self, method: str) -> bool:
        return method in API_METHODS

    def around(
        self, method: str, context: aio.ServicerContext[Any, Any]
    ) -> AbstractAsyncContextManager[None]:
        return nullcontext()

    def _serialized(self, serialize: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
        limit = self._limit

        def checked(response: Any) -> bytes:
            data = serialize(response)
            if len(data) > limit:
                raise ResponseTooLarge(
                    f"the response would be {len(data):,} bytes, over the {limit:,} a client"
                    " accepts; nothing was written: ask for less at once (fewer or smaller items)"
                )
            return data

        return checked

    def wrap(self, method: str, handler: Handler) -> Handler:
        serialize = self._serialized(handler.response_serializer or bytes)
        if handler.unary_unary is not None:
            unary: Any = handler.unary_unary

            async def unary_unary(request: Any, context: aio.ServicerContext[Any, Any]) -> bytes:
                return serialize(await unary(request, context))

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, request_deserializer=handler.request_deserializer
            )
        stream: Any = handler.unary_stream

        async def unary_stream(
            request: Any, context: aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[bytes]:
            async for response in stream(request, context):
                yield serialize(response)

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, request_deserializer=handler.request_deserializer
        )
