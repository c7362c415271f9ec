"""The server as a developer meets it: the grpcurl binary, reflection only, no proto files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from service.server import Server
from tests.support.grpcurl import grpcurl, response_metadata

# conftest's autouse `empty_tables` fetches db_pool lazily, which fails inside the running loop
# unless the session-scoped pool is already part of the test's fixture closure.
pytestmark = pytest.mark.usefixtures("db_pool")


async def test_list_shows_both_services_health_and_reflection(server: Server) -> None:
    result = await grpcurl(server, "list")
    assert result.returncode == 0, result.stderr
    services = set(result.stdout.split())
    assert {
        "blog.v1.UserService",
        "blog.v1.PostService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services


async def test_describe_get_user_shows_no_side_effects(server: Server) -> None:
    result = await grpcurl(server, "describe", "blog.v1.UserService.GetUser")
    assert result.returncode == 0, result.stderr
    assert "rpc GetUser" in result.stdout
    assert "NO_SIDE_EFFECTS" in result.stdout


async def test_describe_create_user_has_no_idempotency_option(server: Server) -> None:
    result = await grpcurl(server, "describe", "blog.v1.UserService.CreateUser")
    assert result.returncode == 0, result.stderr
    assert "rpc CreateUser" in result.stdout and "NO_SIDE_EFFECTS" not in result.stdout


async def test_create_and_read_back_a_user_with_json(server: Server) -> None:
    body = {"email": "curl@example.com", "username": "curl", "password": "password123"}
    created = await grpcurl(
        server, "blog.v1.UserService/CreateUser", options=("-d", json.dumps(body))
    )
    assert created.returncode == 0, created.stderr
    user = json.loads(created.stdout)
    assert user["email"] == "curl@example.com" and user["isActive"] is True
    assert "createdAt" in user and "updatedAt" not in user
    assert "password" not in created.stdout.lower() and "argon2" not in created.stdout

    fetched = await grpcurl(
        server, "blog.v1.UserService/GetUser", options=("-d", json.dumps({"id": user["id"]}))
    )
    assert fetched.returncode == 0, fetched.stderr
    assert json.loads(fetched.stdout) == user


async def test_error_shows_code_message_and_error_info(server: Server) -> None:
    result = await grpcurl(server, "blog.v1.UserService/GetUser", options=("-d", '{"id": 987654}'))
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "NotFound" in output
    assert "987654" in output
    assert "google.rpc.ErrorInfo" in output
    assert "USER_NOT_FOUND" in output and "blog.v1" in output


async def test_validation_error_shows_bad_request_fields(server: Server) -> None:
    body = {"email": "nope", "username": "x", "password": "short"}
    result = await grpcurl(
        server, "blog.v1.UserService/CreateUser", options=("-d", json.dumps(body))
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "InvalidArgument" in output and "google.rpc.BadRequest" in output
    for field in ("email", "username", "password"):
        assert re.search(rf'"field":\s*"{field}"', output), field


async def test_request_id_is_echoed_in_response_metadata(server: Server) -> None:
    result = await grpcurl(
        server,
        "blog.v1.UserService/ListUsers",
        options=("-v", "-H", "x-request-id: abc", "-d", "{}"),
    )
    assert result.returncode == 0, result.stderr
    assert "Response headers received:" in result.stdout
    assert "x-request-id: abc" in response_metadata(result.stdout)


async def test_request_id_is_echoed_on_failed_calls_too(server: Server) -> None:
    result = await grpcurl(
        server,
        "blog.v1.UserService/GetUser",
        options=("-v", "-H", "x-request-id: req-404", "-d", '{"id": 5}'),
    )
    assert result.returncode != 0
    assert "x-request-id: req-404" in response_metadata(result.stdout + result.stderr)


async def test_a_request_id_is_generated_when_none_is_sent(server: Server) -> None:
    result = await grpcurl(server, "blog.v1.UserService/ListUsers", options=("-v", "-d", "{}"))
    assert result.returncode == 0, result.stderr
    assert re.search(r"x-request-id: \S+", response_metadata(result.stdout))


async def test_health_check_reports_serving(server: Server) -> None:
    result = await grpcurl(server, "grpc.health.v1.Health/Check")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"status": "SERVING"}


PROTOSET = Path(__file__).resolve().parents[1] / "generated/blog/v1/descriptors.binpb"


async def test_protoset_is_self_contained_grpcurl_calls_with_it_and_no_reflection(
    server: Server,
) -> None:
    # Without --include_imports grpcurl refuses the file: no descriptor for timestamp.proto.
    listed = await grpcurl(server, "list", options=("-protoset", str(PROTOSET)))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["blog.v1.PostService", "blog.v1.UserService"]
    body = {"email": "set@example.com", "username": "protoset", "password": "password123"}
    created = await grpcurl(
        server,
        "blog.v1.UserService/CreateUser",
        options=("-protoset", str(PROTOSET), "-d", json.dumps(body)),
    )
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["username"] == "protoset"
