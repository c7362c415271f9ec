"""Facts about our API read from the proto descriptors, never from a hand-kept list."""

from __future__ import annotations

from blog.v1 import post_service_pb2, user_service_pb2
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.descriptor_pb2 import MethodOptions

SERVICES: tuple[ServiceDescriptor, ...] = (
    user_service_pb2.DESCRIPTOR.services_by_name["UserService"],
    post_service_pb2.DESCRIPTOR.services_by_name["PostService"],
)


def method_path(method: MethodDescriptor) -> str:
    """The HTTP/2 path gRPC uses for a method: /blog.v1.UserService/GetUser."""
    return f"/{method.containing_service.full_name}/{method.name}"


API_METHODS: frozenset[str] = frozenset(
    method_path(m) for service in SERVICES for m in service.methods
)

# Methods marked `option idempotency_level = NO_SIDE_EFFECTS;`: they run read-only.
READ_ONLY_METHODS: frozenset[str] = frozenset(
    method_path(m)
    for service in SERVICES
    for m in service.methods
    if m.GetOptions().idempotency_level == MethodOptions.NO_SIDE_EFFECTS
)

# Server-streaming methods: bounded by the client's deadline only, never by the default one.
STREAMING_METHODS: frozenset[str] = frozenset(
    method_path(m) for service in SERVICES for m in service.methods if m.server_streaming
)
