"""Property tests built from the descriptors: every RPC of every service in `service.api.SERVICES`
(read from the protos, never listed by hand, so a new RPC cannot escape) gets requests whose every
field is drawn from its type (unicode, control characters, NUL, huge strings; zero, negative and
extreme integers; unknown enum values; random masks, etags and page tokens), and raw bytes: random
ones, and valid encodings cut short or with a byte changed, sent as they are.

Whatever comes in, no call ends INTERNAL or UNKNOWN, the server logs no ERROR, it keeps running,
and a call that fails leaves the database exactly as it was. Oversized messages are
RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import blog.v1
import grpc
import pytest
from blog.v1 import (
    post_service_pb2,
    post_service_pb2_grpc,
    resources_pb2,
    user_service_pb2,
    user_service_pb2_grpc,
)
from google.protobuf import descriptor_pb2, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.api import SERVICES, method_path
from tests.support import ServerProcess, plain

INT64 = st.one_of(
    st.sampled_from([0, -1, 1, 2, 3, 2**63 - 1, -(2**63), 2**31, -(2**31)]),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
INT32 = st.one_of(
    st.sampled_from([0, -1, 1, 1000, 1001, 2**31 - 1, -(2**31)]),
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
)
CONTROLS = st.text(alphabet=st.characters(codec="utf-8", categories=["Cc"]), min_size=1)
TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=100, max_size=1200),
    st.builds(lambda a, c, b: a + c + b, st.text(max_size=10), CONTROLS, st.text(max_size=10)),
    st.sampled_from(
        ["", " ", "\x00", "a\x00b", "\x1b[2J", "é" * 300, "😀" * 101, "%_\\", "x" * 256]
    ),
    st.builds(lambda n, c: c * n, st.integers(0, 120_000), st.sampled_from(["a", "\x00", "ü"])),
)
EMAILS = st.one_of(
    TEXT, st.builds(lambda a, b: f"{a}@{b}.com", st.text(max_size=20), st.text(max_size=20))
)
ETAGS = st.one_of(
    TEXT,
    st.sampled_from(["v1", "v2", "v0", "v²", "v\u0661", "v2147483647", "v2147483648", "v-1"]),
    INT64.map(lambda n: f"v{n}"),
)
TOKENS = st.one_of(
    TEXT,
    st.binary(max_size=200).map(lambda b: base64.urlsafe_b64encode(b).decode()),
    st.binary(min_size=32, max_size=32).map(lambda b: base64.urlsafe_b64encode(b).decode()),
    st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode().rstrip("=")),
)
METHODS: list[MethodDescriptor] = [m for service in SERVICES for m in service.methods]


def mask_paths() -> list[str]:
    """What an update_mask may name, read from the descriptors: every field of each resource an
    Update request carries, bare and prefixed ("title", "post.title"), and each prefix's wildcard;
    then paths that name no field of any resource."""
    paths = {"*", "", "password", "hashed_password", "id.id", "user.post.title"}
    for method in METHODS:
        request = method.input_type
        if "update_mask" not in request.fields_by_name:
            continue
        for carried in request.fields:
            if carried.message_type is None or carried.name == "update_mask":
                continue
            paths.add(f"{carried.name}.*")
            for field in carried.message_type.fields:
                paths |= {field.name, f"{carried.name}.{field.name}"}
    return sorted(paths)


# Printable ASCII is all a gRPC client lets through as a metadata value; the server must cope
# with any of it (tests/test_hostile_input.py sends the rest through grpcurl).
REQUEST_IDS = st.one_of(
    st.none(), st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=200)
)
# Strings whose name says what they hold get that kind of value too (still of their type).
BY_NAME: dict[str, st.SearchStrategy[Any]] = {
    "email": EMAILS,
    "login": EMAILS,
    "etag": ETAGS,
    "page_token": TOKENS,
    "paths": st.one_of(st.sampled_from(mask_paths()), st.text(max_size=30)),
}
MAX_DEPTH = 2  # User.posts[].author.posts[]...: deep enough to reach every field, no deeper
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
T = 10  # seconds per call; a hang fails as DEADLINE_EXCEEDED is allowed, so keep it generous


class World:
    """A running service, a raw channel to it, and a way to look at the database."""

    def __init__(self, process: ServerProcess, database_url: str) -> None:
        self.process = process
        self.channel = grpc.insecure_channel(
            process.address, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
        )
        self.users = user_service_pb2_grpc.UserServiceStub(self.channel)
        self.posts = post_service_pb2_grpc.PostServiceStub(self.channel)
        self._runner = asyncio.Runner()
        self._db: asyncpg.Connection = self._runner.run(asyncpg.connect(plain(database_url)))
        self.ids: list[int] = []
        self.user_ids: list[int] = []
        self._log_offset = len(process.output())

    def close(self) -> None:
        self.channel.close()
        self._runner.run(self._db.close())
        self._runner.close()

    def snapshot(self) -> tuple[Any, ...]:
        row = self._runner.run(
            self._db.fetchrow(
                "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM posts),"
                " (SELECT md5(coalesce(string_agg(u::text, ',' ORDER BY id), '')) FROM users u),"
                " (SELECT md5(coalesce(string_agg(p::text, ',' ORDER BY id), '')) FROM posts p),"
                " (SELECT array_agg(id) FROM (SELECT id FROM users UNION SELECT id FROM posts) i)"
            )
        )
        self.ids = list(row[4] or [])
        return tuple(row[:4])

    def new_log_lines(self) -> list[str]:
        output = self.process.output()
        lines, self._log_offset = output[self._log_offset :].splitlines(), len(output)
        return lines

    def check(self, call: Callable[[], Any]) -> grpc.StatusCode:
        """Runs one call; asserts the invariants; returns its code."""
        before = self.snapshot()
        code = grpc.StatusCode.OK
        try:
            result = call()
            if hasattr(result, "__iter__") and not isinstance(result, bytes | Message):
                list(result)
        except grpc.RpcError as error:
            code = error.code()
        assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), code
        assert self.process.process is not None and self.process.process.poll() is None
        if code != grpc.StatusCode.OK:
            assert self.snapshot() == before, f"a call that failed {code} changed the database"
        logged = [line for line in self.new_log_lines() if "ERROR" in line or "Traceback" in line]
        assert not logged, logged
        return code


@pytest.fixture(scope="module")
def world(database_url: str) -> Iterator[World]:
    process = ServerProcess({"DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"})
    with process:
        w = World(process, database_url)
        for i in range(3):
            user = w.users.CreateUser(
                user_service_pb2.CreateUserRequest(
                    email=f"fuzz{i}@example.com", username=f"fuzz{i}", password="password-123"
                ),
                timeout=10,
            )
            w.user_ids.append(user.id)
            w.posts.CreatePost(
                post_service_pb2.CreatePostRequest(author_id=user.id, title="t", content="c"),
                timeout=10,
            )
        try:
            yield w
        finally:
            w.close()


@pytest.fixture(autouse=True)
def _clean_start(world: World) -> None:
    """Tests share the world; truncation by conftest would remove the seeded rows."""


def scalar(field: FieldDescriptor, world: World) -> st.SearchStrategy[Any]:
    """Values of a scalar field's type; ids also include rows that exist."""
    if field.name in BY_NAME:
        return BY_NAME[field.name]
    kind = field.cpp_type
    if kind == FieldDescriptor.CPPTYPE_INT64:
        if field.name == "id" or field.name.endswith("_id"):
            # An index into the rows that exist now, not a choice among them: the rows change
            # from call to call, and hypothesis needs the same draws to replay an example.
            existing = st.integers(0, 2**16).map(
                lambda i: world.ids[i % len(world.ids)] if world.ids else 1
            )
            return st.one_of(INT64, existing)
        return INT64
    if kind == FieldDescriptor.CPPTYPE_INT32:
        return INT32
    if kind == FieldDescriptor.CPPTYPE_UINT32:
        return st.integers(0, 2**32 - 1)
    if kind == FieldDescriptor.CPPTYPE_UINT64:
        return st.integers(0, 2**64 - 1)
    if kind == FieldDescriptor.CPPTYPE_BOOL:
        return st.booleans()
    if kind in (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT):
        return st.floats(width=32 if kind == FieldDescriptor.CPPTYPE_FLOAT else 64)
    if kind == FieldDescriptor.CPPTYPE_ENUM and field.enum_type is not None:
        # Open enums (proto3): unknown numbers are sent too.
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), INT32)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=300)
    return TEXT


def build(descriptor: Descriptor, data: st.DataObject, world: World, depth: int = 0) -> Message:
    """A message of `descriptor`'s type with a random subset of its fields set."""
    message = message_factory.GetMessageClass(descriptor)()
    for field in descriptor.fields:
        if not data.draw(st.booleans(), label=f"set {field.full_name}"):
            continue
        repeated = field.is_repeated
        if field.message_type is not None:
            if field.message_type.GetOptions().map_entry or depth >= MAX_DEPTH:
                continue
            count = data.draw(st.sampled_from([1, 1, 2, 3, 1001]) if repeated else st.just(1))
            items = [
                build(field.message_type, data, world, depth + 1) for _ in range(min(count, 3))
            ]
            items += items[-1:] * (count - len(items))  # 1001 items: more than any batch holds
            target = getattr(message, field.name)
            for item in items:
                (target.add() if repeated else target).CopyFrom(item)
            continue
        values = st.lists(scalar(field, world), max_size=6) if repeated else scalar(field, world)
        value = data.draw(values, label=field.full_name)
        if repeated:
            getattr(message, field.name).extend(value)
        else:
            setattr(message, field.name, value)
    return message


def payloads(method: MethodDescriptor, data: st.DataObject, world: World) -> bytes:
    """The request's bytes: a generated message, that message damaged, or random bytes."""
    encoded = build(method.input_type, data, world).SerializeToString()
    mode = data.draw(st.sampled_from(["message"] * 4 + ["cut", "changed", "random"]))
    if mode == "cut" and encoded:
        return encoded[: data.draw(st.integers(0, len(encoded) - 1))]
    if mode == "changed" and encoded:
        at = data.draw(st.integers(0, len(encoded) - 1))
        return encoded[:at] + bytes([data.draw(st.integers(0, 255))]) + encoded[at + 1 :]
    if mode == "random":
        return data.draw(st.binary(max_size=120))
    return encoded


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.full_name)
@FUZZ
@given(data=st.data())
def test_fuzz_every_rpc(world: World, method: MethodDescriptor, data: st.DataObject) -> None:
    payload = payloads(method, data, world)
    request_id = data.draw(REQUEST_IDS)
    metadata = () if request_id is None else (("x-request-id", request_id),)
    as_is: Any = {"request_serializer": None, "response_deserializer": None}
    if method.server_streaming:
        stream = world.channel.unary_stream(method_path(method), **as_is)
        world.check(lambda: stream(payload, timeout=T, metadata=metadata))
    else:
        unary = world.channel.unary_unary(method_path(method), **as_is)
        world.check(lambda: unary(payload, timeout=T, metadata=metadata))


def test_the_fuzzed_services_are_every_service_the_protos_declare() -> None:
    """METHODS comes from service.api.SERVICES, which names the services one by one: every
    service of package blog.v1 in the descriptor set `make proto` writes must be among them,
    so that a new service (and each of its RPCs) is fuzzed from the day it is declared."""
    files = descriptor_pb2.FileDescriptorSet.FromString(
        (Path(blog.v1.__file__).parent / "descriptors.binpb").read_bytes()
    ).file
    declared = {
        (f"{file.package}.{service.name}", method.name)
        for file in files
        if file.package == "blog.v1"
        for service in file.service
        for method in service.method
    }
    fuzzed = {(m.containing_service.full_name, m.name) for m in METHODS}
    assert fuzzed == declared
    assert any(m.server_streaming for m in METHODS)  # streams are fuzzed as streams


def test_mask_paths_cover_every_field_of_the_updated_resources() -> None:
    paths = mask_paths()
    for resource in (resources_pb2.User.DESCRIPTOR, resources_pb2.Post.DESCRIPTOR):
        assert {field.name for field in resource.fields} <= set(paths), resource.name


def test_messages_above_the_maximum_are_resource_exhausted(world: World) -> None:
    """GRPC_MAX_MESSAGE_BYTES defaults to 4 MiB: a 5 MiB request is refused whole."""
    huge = "x" * (5 * 1024 * 1024)
    author = world.user_ids[0]
    for call in (
        lambda: world.posts.CreatePost(
            post_service_pb2.CreatePostRequest(author_id=author, title="t", content=huge),
            timeout=T,
        ),
        lambda: world.users.GetUserByEmail(
            user_service_pb2.GetUserByEmailRequest(email=huge), timeout=T
        ),
        lambda: world.posts.BatchCreatePosts(
            post_service_pb2.BatchCreatePostsRequest(
                requests=[
                    post_service_pb2.CreatePostRequest(
                        author_id=author, title="t", content="y" * 90_000
                    )
                ]
                * 60
            ),
            timeout=T,
        ),
    ):
        assert world.check(call) == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Just under the limit is fine for the transport (the content rule then says no).
    assert (
        world.check(
            lambda: world.posts.CreatePost(
                post_service_pb2.CreatePostRequest(
                    author_id=author, title="t", content="x" * 4_000_000
                ),
                timeout=T,
            )
        )
        == grpc.StatusCode.INVALID_ARGUMENT
    )
