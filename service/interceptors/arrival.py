"""A call's request must arrive in time: a stream opened and never sent a request is reset.

grpc.aio reads a unary method's request before any interceptor or handler runs, and waits for
it as long as the client likes: a client (with or without a token) could open thousands of
streams that send headers and no body, each one holding a call in progress. This layer takes
the read over: it registers each method as request-streaming, reads the one request itself
within `timeout` (DEFAULT_TIMEOUT_SECONDS), and hands it to the inner layers as before. A
request that does not come in time ends the call DEADLINE_EXCEEDED (reason REQUEST_TIMEOUT),
and gRPC resets the stream; one that never comes (END_STREAM at once) is MALFORMED_REQUEST.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from blog.v1.error_reason_pb2 import ErrorReason
from grpc import aio

from service.domain.errors import DeadlineExceeded, MalformedRequest
from service.interceptors.base import CallInterceptor, Handler, decoding


class RequestArrivalInterceptor(CallInterceptor):
    def __init__(self, timeout: float) -> None:
        self._timeout = timeout

    def around(self, method: str, context: aio.ServicerContext[Any, Any]) -> Any:
        raise NotImplementedError  # this layer changes how the call is read: see `wrap`

    async def _request(self, requests: AsyncIterator[Any], checked: Callable[[Any], Any]) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                return checked(await anext(requests))
        except TimeoutError:
            raise DeadlineExceeded(
                f"the request message did not arrive within {self._timeout:g} s",
                reason=ErrorReason.REQUEST_TIMEOUT,
            ) from None
        except StopAsyncIteration:
            raise MalformedRequest("the call ended without a request message") from None

    def wrap(self, method: str, handler: Handler) -> Handler:
        if handler.request_streaming:
            return handler  # reflection's bidi stream reads its own requests
        deserialize, checked = decoding(handler)
        options: dict[str, Any] = {
            "request_deserializer": deserialize,
            "response_serializer": handler.response_serializer,
        }

        async def read(requests: AsyncIterator[Any]) -> Any:
            return await self._request(requests, checked)

        if handler.unary_unary is not None:
            unary: Any = handler.unary_unary

            async def one(
                requests: AsyncIterator[Any], context: aio.ServicerContext[Any, Any]
            ) -> Any:
                return await unary(await read(requests), context)

            return grpc.stream_unary_rpc_method_handler(one, **options)
        stream: Any = handler.unary_stream
        if inspect.isasyncgenfunction(stream):

            async def many(
                requests: AsyncIterator[Any], context: aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                async for response in stream(await read(requests), context):
                    yield response

            return grpc.stream_stream_rpc_method_handler(many, **options)

        async def writes(
            requests: AsyncIterator[Any], context: aio.ServicerContext[Any, Any]
        ) -> None:
            await stream(await read(requests), context)

        return grpc.stream_stream_rpc_method_handler(writes, **options)
