"""service.methods.MethodTable: what the generated add_*Servicer_to_server functions give it is
found by path, once. (Through a real server: tests/test_protocol.py, every advertised method.)"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from blog.v1 import user_service_pb2_grpc

from service.methods import MethodTable

_USERS = user_service_pb2_grpc.UserServiceServicer()  # type: ignore[abstract]  # UNIMPLEMENTED


class _Details(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


def test_the_generated_functions_methods_are_found_by_path() -> None:
    table = MethodTable()
    table.add(user_service_pb2_grpc.add_UserServiceServicer_to_server, _USERS)
    handler = table.service(_Details("/blog.v1.UserService/GetUser"))
    assert handler is not None and handler.unary_unary is not None
    assert table.service(_Details("/blog.v1.UserService/NoSuchMethod")) is None
    assert table.service(_Details("/blog.v1.PostService/GetPost")) is None


def test_a_method_served_twice_is_refused_at_start_up() -> None:
    table = MethodTable()
    table.add(user_service_pb2_grpc.add_UserServiceServicer_to_server, _USERS)
    with pytest.raises(ValueError, match=r"/blog\.v1\.UserService/\w+ is served twice"):
        table.add(user_service_pb2_grpc.add_UserServiceServicer_to_server, _USERS)


def test_code_that_registers_no_methods_is_served_through_its_generic_handler() -> None:
    """What grpcio-tools generated before 1.62: add_generic_rpc_handlers only."""
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: request)

    def add_old_style(servicer: Any, server: Any) -> None:
        generic = grpc.method_handlers_generic_handler("old.v1.Old", {"Echo": handler})
        server.add_generic_rpc_handlers((generic,))

    table = MethodTable()
    table.add(add_old_style, object())
    assert table.service(_Details("/old.v1.Old/Echo")) is handler
    assert table.service(_Details("/old.v1.Old/Other")) is None
