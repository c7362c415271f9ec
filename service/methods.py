"""The methods a server serves, found by one dict lookup: no "registered methods" in grpc.aio.

The generated `add_*Servicer_to_server` functions give a server each method twice: in a generic
handler, and as a registered method. grpc.aio keeps one pending request per registered method
and, at every call, waits on all of them with `asyncio.wait` (its server loop): with our twenty
methods that costs each call about 20 µs of the event loop's time, and the event loop is what
limits throughput (docs/benchmarks.md, "Registered methods"). A `MethodTable` takes the place of
the server in those functions, keeps the methods they pass, and is given to the server as its
one generic handler, so grpc.aio waits on one pending request, whatever the number of methods.

    methods = MethodTable()
    methods.add(user_service_pb2_grpc.add_UserServiceServicer_to_server, UserServicer(...))
    server.add_generic_rpc_handlers((methods,))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import grpc

S = TypeVar("S")


class MethodTable(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Method handlers by path (/package.Service/Method), served as one generic handler."""

    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        self._generic: list[grpc.GenericRpcHandler[Any, Any]] = []

    def add(self, add_to_server: Callable[[S, Any], None], servicer: S) -> None:
        """Serve `servicer` with a generated `add_*Servicer_to_server` function."""
        add_to_server(servicer, self)

    # The two calls the generated functions make on a server. Each passes its methods to both;
    # the generic handlers are asked only for a path the table does not hold (an unknown
    # method, or code generated before grpcio-tools 1.62, which registers no methods).
    def add_generic_rpc_handlers(
        self, handlers: Iterable[grpc.GenericRpcHandler[Any, Any]]
    ) -> None:
        self._generic.extend(handlers)

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        for name, handler in handlers.items():
            path = f"/{service}/{name}"
            if path in self._handlers:
                raise ValueError(f"{path} is served twice")
            self._handlers[path] = handler

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = self._handlers.get(handler_call_details.method)
        if handler is None:
            for generic in self._generic:
                if (handler := generic.service(handler_call_details)) is not None:
                    break
        return handler
