"""What reaches `python -m service` below the level of well-formed messages: request bytes that do
not decode, and every method reflection advertises (health's List among them). Each call ends
with a status the protocol allows, never INTERNAL or UNKNOWN, and is logged, counted and given a
request id like any other.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from tests.support import ServerProcess, rich_error
from tests.support.telemetry import (
    handled_total,
    observed_env,
    response_request_ids,
    scrape,
    wait_for_entry,
)

TOKEN = f"tok-{uuid.uuid4().hex}"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
AS_IS: Any = {"request_serializer": None, "response_deserializer": None}  # bytes in, bytes out
T = 10

BAD_UTF8 = b"\x0a\x02\xff\xfe"  # field 1, a string of two bytes that are not UTF-8
TRUNCATED_VARINT = b"\x08\xff"  # field 1, a varint whose continuation bit promises more
TRUNCATED_STRING = b"\x12\x05ab"  # field 2, a string of 5 bytes of which 2 arrived


@pytest.fixture(scope="module")
def served(database_url: str) -> Iterator[ServerProcess]:
    with ServerProcess(observed_env(database_url, TOKEN)) as process:
        yield process


@pytest.fixture
def channel(served: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(served.address) as ch:
        yield ch


def raw_call(channel: grpc.Channel, method: str, payload: bytes, **kwargs: Any) -> Any:
    """Sends `payload` as the request's bytes, as they are (no serializer), and returns the
    response bytes (a list of them for a stream); raises grpc.RpcError as a stub would."""
    if method.endswith("/StreamPosts") or method.endswith("/Watch"):
        return list(channel.unary_stream(method, **AS_IS)(payload, timeout=T, **kwargs))
    if "ServerReflection" in method:
        return list(channel.stream_stream(method, **AS_IS)(iter([payload]), timeout=T, **kwargs))
    return channel.unary_unary(method, **AS_IS)(payload, timeout=T, **kwargs)


UNDECODABLE = [
    ("/blog.v1.UserService/GetUserByEmail", BAD_UTF8),
    ("/blog.v1.UserService/CreateUser", TRUNCATED_STRING),
    ("/blog.v1.UserService/GetUser", TRUNCATED_VARINT),
    ("/blog.v1.PostService/CreatePost", b"\x1a\x03\xc3\x28\x41"),  # content: broken UTF-8
    ("/blog.v1.PostService/StreamPosts", TRUNCATED_VARINT),
    ("/blog.v1.PostService/BatchCreatePosts", b"\x0a\x04\x12\x02\xed\xa0"),  # a surrogate
]


@pytest.mark.parametrize(("method", "payload"), UNDECODABLE)
def test_undecodable_request_is_malformed_request_with_its_id_logged_and_counted(
    served: ServerProcess, channel: grpc.Channel, method: str, payload: bytes
) -> None:
    rid = f"bad-bytes-{uuid.uuid4().hex}"
    _, service, name = method.split("/")
    labels = (f'grpc_service="{service}"', f'grpc_method="{name}"', 'grpc_code="InvalidArgument"')
    before = handled_total(scrape(served), *labels)
    with pytest.raises(grpc.RpcError) as caught:
        raw_call(channel, method, payload, metadata=(*AUTH, ("x-request-id", rid)))
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
    assert (error.domain, error.reason) == ("blog.v1", "MALFORMED_REQUEST")
    assert "Unexpected <class" not in error.message and "Traceback" not in error.message
    assert response_request_ids(caught.value) == [rid]
    (entry,) = wait_for_entry(served, rid)
    assert (entry["method"], entry["code"], entry["level"]) == (method, "INVALID_ARGUMENT", "INFO")
    assert entry["duration_ms"] >= 0
    assert handled_total(scrape(served), *labels) == before + 1


def test_undecodable_request_without_a_token_is_unauthenticated(channel: grpc.Channel) -> None:
    """Authentication comes first: the bytes of a caller without a token are never looked at."""
    with pytest.raises(grpc.RpcError) as caught:
        raw_call(channel, "/blog.v1.UserService/GetUserByEmail", BAD_UTF8)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    "method",
    [
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    ],
)
def test_undecodable_health_and_reflection_requests_are_malformed_request(
    served: ServerProcess, channel: grpc.Channel, method: str
) -> None:
    rid = f"bad-bytes-{uuid.uuid4().hex}"
    with pytest.raises(grpc.RpcError) as caught:
        raw_call(channel, method, BAD_UTF8, metadata=(("x-request-id", rid),))
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST")
    assert response_request_ids(caught.value) == [rid]
    (entry,) = wait_for_entry(served, rid)
    assert (entry["method"], entry["code"]) == (method, "INVALID_ARGUMENT")


def test_health_list_reports_every_service_it_checks(channel: grpc.Channel) -> None:
    reply = health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest(), timeout=T)
    serving = health_pb2.HealthCheckResponse.SERVING
    assert {name: s.status for name, s in reply.statuses.items()} == {
        "": serving,
        "blog.v1.UserService": serving,
        "blog.v1.PostService": serving,
    }


def test_every_method_reflection_advertises_answers_as_the_protocol_says(
    channel: grpc.Channel,
) -> None:
    """Discovered the way grpcurl does it, through reflection; each method gets an empty
    request (valid bytes for any message): a NOT_FOUND or INVALID_ARGUMENT is an answer, an
    INTERNAL or UNKNOWN is not. Watch streams until its deadline, which is its protocol."""
    database = ProtoReflectionDescriptorDatabase(channel)
    pool = descriptor_pool.DescriptorPool(database)
    methods = [
        f"/{name}/{method.name}"
        for name in database.get_services()
        for method in pool.FindServiceByName(name).methods
    ]
    assert "/grpc.health.v1.Health/List" in methods and len(methods) >= 19, methods
    for method in methods:
        code = grpc.StatusCode.OK
        try:
            if method.endswith("/Watch"):
                next(iter(channel.unary_stream(method, **AS_IS)(b"", timeout=1, metadata=AUTH)))
            else:
                raw_call(channel, method, b"", metadata=AUTH)
        except grpc.RpcError as error:
            code = error.code()
        # UNIMPLEMENTED too: every method it advertises is served (service.methods holds them).
        unanswered = (
            grpc.StatusCode.INTERNAL,
            grpc.StatusCode.UNKNOWN,
            grpc.StatusCode.UNIMPLEMENTED,
        )
        assert code not in unanswered, (method, code)


@pytest.mark.parametrize(
    "method",
    ["/blog.v1.UserService/NoSuchMethod", "/blog.v1.NoSuchService/GetUser", "/GetUser", "/"],
)
def test_a_method_nobody_serves_is_unimplemented(channel: grpc.Channel, method: str) -> None:
    with pytest.raises(grpc.RpcError) as error:
        channel.unary_unary(method, **AS_IS)(b"", timeout=T, metadata=AUTH)
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED, error.value
