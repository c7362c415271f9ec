"""The innermost step of every call: the servicer, and its responses sent from inside the call.

Serialized here, so one that cannot be sent fails the call itself. gRPC serializes a response
after the handler returns, when the call's transaction is already committed and its log line
written: a response over the client's limit (4 MiB by default) then reaches the client as
RESOURCE_EXHAUSTED while the write stays committed and the call is logged OK. Serializing
inside the session turns that into INVALID_ARGUMENT (reason RESPONSE_TOO_LARGE) of the call:
rolled back, logged and counted as what the client receives. It costs nothing extra: each
response is serialized once, here instead of in gRPC.

A stream's messages are written with `context.write` rather than yielded, because only a write
can be timed (interceptors.streams.IdleWatchdog): grpc.aio pulls a yielded message when it
likes. The servicer's generator is read directly by that loop, so a message costs one
serialization, one write and two clock readings, whatever the number of interceptors.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

from blog.v1.error_reason_pb2 import ErrorReason

from service.domain.errors import ResourceExhausted, ResponseTooLarge
from service.interceptors.base import Context, Handler, Proceed, decoded
from service.interceptors.streams import IdleWatchdog

Serializer = Callable[[Any], bytes]


def _as_is(response: Any) -> Any:
    return response


async def _each_decoded(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        yield decoded(request)


class Responses:
    """Builds, per method, the step that calls the servicer and sends what it returns."""

    def __init__(self, *, limit: int, idle_timeout: float) -> None:
        self._limit = limit
        self._idle_timeout = idle_timeout

    def _checked(self, serialize: Serializer) -> Serializer:
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

    def innermost(self, handler: Handler) -> tuple[Proceed, Serializer | None]:
        """The step calling `handler`'s behaviour, and the response serializer to register
        (None: the step hands gRPC bytes)."""
        checked = self._checked(handler.response_serializer or _as_is)
        if handler.unary_unary is not None:
            unary: Any = handler.unary_unary

            async def unary_unary(request: Any, context: Context) -> bytes:
                return checked(await unary(decoded(request), context))

            return unary_unary, None
        if handler.stream_unary is not None:  # served by none of ours; kept whole
            gather: Any = handler.stream_unary

            async def stream_unary(requests: AsyncIterator[Any], context: Context) -> bytes:
                return checked(await gather(_each_decoded(requests), context))

            return stream_unary, None
        streaming = handler.unary_stream is not None
        behaviour: Any = handler.unary_stream if streaming else handler.stream_stream

        def argument(request: Any) -> Any:
            return decoded(request) if streaming else _each_decoded(request)

        if not inspect.isasyncgenfunction(behaviour):
            # A stream written with `await context.write(...)` (grpc_health's Watch, for one):
            # it sends its messages itself, through gRPC's serializer.
            async def writes(request: Any, context: Context) -> None:
                await behaviour(argument(request), context)

            return writes, handler.response_serializer

        async def stream(request: Any, context: Context) -> None:
            await self._write_all(behaviour(argument(request), context), context, checked)

        return stream, None

    async def _write_all(
        self, messages: AsyncGenerator[Any, None], context: Context, checked: Serializer
    ) -> None:
        """Writes every message, ending the stream once one write waited the idle timeout."""
        idle_timeout = self._idle_timeout
        clock = asyncio.get_running_loop().time
        async with aclosing(messages):
            watchdog = IdleWatchdog(idle_timeout)
            try:
                async for message in messages:
                    data = checked(message)
                    watchdog.writing_since = clock()
                    await context.write(data)
                    watchdog.writing_since = None
            except asyncio.CancelledError:
                if not watchdog.fired:
                    raise  # the client cancelled, or its deadline passed
                watchdog.absorb()
                # Raised inside the session: its connection and snapshot go back right away.
                raise ResourceExhausted(
                    f"the client read nothing for {idle_timeout:g} s: stream ended",
                    reason=ErrorReason.STREAM_IDLE_TIMEOUT,
                ) from None
            finally:
                watchdog.stop()
