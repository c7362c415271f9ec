"""What an interceptor of ours is: one coroutine, `around`, run around the rest of the call.

    async def around(self, method, request, context, proceed):
        ...                                          # before the call
        response = await proceed(request, context)   # the inner interceptors and the servicer
        ...                                          # after it; exceptions arrive here too
        return response

The chain (service.interceptors.chain) composes the interceptors that apply to a method into
one handler, built on the method's first call. A plain coroutine rather than an async context
manager: `@asynccontextmanager` costs about 5 µs a layer and call (an async generator, two
awaits and a StopAsyncIteration), a coroutine around an await a fraction of one.

`request` is the call's request as this point of the chain sees it: outside
RequestArrivalInterceptor (interceptors.arrival) the stream it will be read from, inside it the
message. `proceed` returns what the servicer returned; for a server stream, None once every
message is written (interceptors.responses).

The request's parse is part of the call too. grpcio parses the bytes before any interceptor
runs, and a parse error there ended the call UNKNOWN with Python's exception text, unlogged,
uncounted, without a request id. Here the parse never raises: its error travels into the call
as an `Undecodable` request, and the innermost step raises it as MALFORMED_REQUEST, inside
every interceptor, like any other error of the call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from grpc import aio

from service.api import Method
from service.domain.errors import MalformedRequest

if TYPE_CHECKING:  # generic only in the stubs
    import grpc

    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    Handler = object
Context = aio.ServicerContext[Any, Any]
Proceed = Callable[[Any, Context], Awaitable[Any]]


class Interceptor(Protocol):
    async def around(self, method: Method, request: Any, context: Context, proceed: Proceed) -> Any:
        """Runs `proceed(request, context)`, the rest of the call, with this layer's work."""
        ...


class Undecodable:
    """Stands for a request whose bytes did not decode; `problem` is the parser's word on it."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem


class DeferringDeserializer:
    """A request deserializer whose failures become `Undecodable` requests instead."""

    __slots__ = ("_parse",)

    def __init__(self, parse: Callable[[bytes], Any]) -> None:
        self._parse = parse

    def __call__(self, data: bytes) -> Any:
        try:
            return self._parse(data)
        except Exception as error:  # protobuf's DecodeError, or whatever a parser raises
            return Undecodable(str(error))


def decoded(request: Any) -> Any:
    """The request, or MALFORMED_REQUEST if its bytes did not decode."""
    if isinstance(request, Undecodable):
        raise MalformedRequest(f"the request does not decode: {request.problem}")
    return request
