"""Facts about our API read from the proto descriptors, never from a hand-kept list."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class Method:
    """What the interceptor chain knows of a method, decided once per method from its path."""

    path: str  # "/blog.v1.UserService/GetUser"
    service: str  # "blog.v1.UserService"
    name: str  # "GetUser"
    api: bool  # one of SERVICES' methods: not health, not reflection
    read_only: bool  # NO_SIDE_EFFECTS: runs on the read pool
    streaming: bool  # the server streams its responses
    request_streaming: bool  # the client streams its requests (reflection only)


def describe(path: str, *, request_streaming: bool, streaming: bool) -> Method:
    """The method served at `path`, whose handler streams what the two flags say."""
    service, _, name = path[1:].partition("/")
    return Method(
        path=path,
        service=service,
        name=name,
        api=path in API_METHODS,
        read_only=path in READ_ONLY_METHODS,
        streaming=streaming,
        request_streaming=request_streaming,
    )


# Selectors: which methods an interceptor applies to (service.interceptors.chain). The one
# place that says it; no interceptor decides it for itself.
Selector = Callable[[Method], bool]


def every_method(method: Method) -> bool:
    """Health and reflection included: every call is logged, counted and has its errors mapped."""
    return True


def single_request_methods(method: Method) -> bool:
    """Methods whose request is one message: every one but reflection's."""
    return not method.request_streaming


def api_methods(method: Method) -> bool:
    """Our API's methods: health and reflection stay open (no token), untraced, unadmitted."""
    return method.api


def api_unary_methods(method: Method) -> bool:
    return method.api and not method.streaming


def api_streaming_methods(method: Method) -> bool:
    return method.api and method.streaming
