"""Server reflection, v1 and v1alpha, so grpcurl and ghz work without proto files.

grpcio-reflection ships only v1alpha. The v1 protocol is the same messages under another
package, so its descriptor is derived from v1alpha's and served by the same servicer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc import aio
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1_SERVICE = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"


def _v1_messages() -> tuple[Any, Any]:
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
    request = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionRequest")
    )
    response = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionResponse")
    )
    return request, response


def enable(server: aio.Server, service_names: Sequence[str]) -> None:
    names = [*service_names, reflection.SERVICE_NAME, V1_SERVICE]
    servicer = reflection.aio.ReflectionServicer(names)  # type: ignore[attr-defined]
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1_request, v1_response = _v1_messages()

    async def info(requests: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        # Same wire format: re-read each v1 request as v1alpha, answer, re-wrap as v1.
        async def as_v1alpha() -> Any:
            async for request in requests:
                yield reflection_pb2.ServerReflectionRequest.FromString(request.SerializeToString())

        async for response in servicer.ServerReflectionInfo(as_v1alpha(), context):
            yield v1_response.FromString(response.SerializeToString())

    handler = grpc.stream_stream_rpc_method_handler(
        info,
        request_deserializer=v1_request.FromString,
        response_serializer=v1_response.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(V1_SERVICE, {"ServerReflectionInfo": handler}),)
    )
