"""Server reflection, v1 and v1alpha, so grpcurl and ghz work without proto files.

Three things beyond grpcio-reflection's stock servicer:
* v1: grpcio-reflection ships only v1alpha. The v1 protocol is the same messages under
  another package: its descriptor is derived from v1alpha's (so reflection can describe it),
  and its calls are served by the same servicer, the bytes read and written as v1alpha.
* comments: descriptors compiled into *_pb2.py carry no comments, so our own files are served
  from the descriptor set `make proto` writes with source info; `grpcurl describe` shows them.
* methods: `grpcurl describe blog.v1.UserService.GetUser` asks for the file of a method,
  which the upb descriptor pool cannot find by itself.

The last two override private methods of grpcio-reflection's servicer (`_file_by_filename`,
`_file_containing_symbol`, and its `_pool`): pyproject.toml pins the grpcio release they were
written against, and tests/test_reflection.py fails when an upgrade no longer matches.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from service.methods import MethodTable

V1_SERVICE = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"


def _register_v1() -> None:
    """Adds grpc/reflection/v1/reflection.proto, derived from v1alpha's, to the default pool."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_V1_FILE)
    except KeyError:
        proto = descriptor_pb2.FileDescriptorProto()
        reflection_pb2.DESCRIPTOR.CopyToProto(proto)
        proto.name = _V1_FILE
        proto.package = "grpc.reflection.v1"
        proto.options.Clear()
        for message in proto.message_type:
            for field in message.field:
                if field.type_name.startswith(".grpc.reflection.v1alpha."):
                    field.type_name = field.type_name.replace(".v1alpha.", ".v1.")
        for method in proto.service[0].method:
            method.input_type = method.input_type.replace(".v1alpha.", ".v1.")
            method.output_type = method.output_type.replace(".v1alpha.", ".v1.")
        pool.Add(proto)


def _documented_files() -> dict[str, bytes]:
    """Our .proto files, serialized with their comments (source info), by file name."""
    data = resources.files("blog.v1").joinpath("descriptors.binpb").read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(data).file
    return {f.name: f.SerializeToString() for f in files}


class _ReflectionServicer(reflection.aio.ReflectionServicer):  # type: ignore[misc,name-defined]
    def __init__(self, service_names: Sequence[str]) -> None:
        super().__init__(service_names)
        self._documented = _documented_files()

    def _find_symbol(self, name: str) -> Any:
        try:
            return self._pool.FindFileContainingSymbol(name)
        except KeyError:
            service, _, method = name.rpartition(".")
            if not service or method not in self._pool.FindServiceByName(service).methods_by_name:
                raise
            return self._pool.FindFileContainingSymbol(service)

    def _respond(self, request: Any, descriptor: Any) -> Any:
        files: dict[str, Any] = {}
        pending = [descriptor]
        while pending:
            current = pending.pop()
            if current.name not in files:
                files[current.name] = current
                pending.extend(current.dependencies)
        serialized = []
        for name, file in files.items():
            if name in self._documented:
                serialized.append(self._documented[name])
            else:
                proto = descriptor_pb2.FileDescriptorProto()
                file.CopyToProto(proto)
                serialized.append(proto.SerializeToString())
        return reflection_pb2.ServerReflectionResponse(
            file_descriptor_response=reflection_pb2.FileDescriptorResponse(
                file_descriptor_proto=serialized
            ),
            original_request=request,
        )

    def _not_found(self, request: Any) -> Any:
        return reflection_pb2.ServerReflectionResponse(
            error_response=reflection_pb2.ErrorResponse(
                error_code=grpc.StatusCode.NOT_FOUND.value[0], error_message="not found"
            ),
            original_request=request,
        )

    def _file_by_filename(self, request: Any, filename: str) -> Any:
        try:
            return self._respond(request, self._pool.FindFileByName(filename))
        except KeyError:
            return self._not_found(request)

    def _file_containing_symbol(self, request: Any, name: str) -> Any:
        try:
            return self._respond(request, self._find_symbol(name))
        except KeyError:
            return self._not_found(request)


def enable(methods: MethodTable, service_names: Sequence[str]) -> None:
    names = [*service_names, reflection.SERVICE_NAME, V1_SERVICE]
    servicer = _ReflectionServicer(names)
    methods.add(reflection_pb2_grpc.add_ServerReflectionServicer_to_server, servicer)
    _register_v1()
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        # The same messages on the wire: v1 requests parse as v1alpha, and v1alpha responses
        # serialize to the bytes of their v1 twins.
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    methods.add_registered_method_handlers(V1_SERVICE, {"ServerReflectionInfo": handler})
