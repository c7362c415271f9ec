"""Request ids, JSON logs and Prometheus metrics of `python -m service`, read the way an operator
reads them: from its output and from its /metrics endpoint.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from blog.v1 import post_service_pb2, post_service_pb2_grpc, user_service_pb2, user_service_pb2_grpc

from tests.support import ServerProcess
from tests.support.telemetry import (
    calls_with_secrets,
    handled_total,
    log_entries,
    observed_env,
    response_request_ids,
    scrape,
    wait_for_entry,
)

TOKEN = f"tok-{uuid.uuid4().hex}"
PASSWORD = f"Pw-{uuid.uuid4().hex}-secret"
NEW_PASSWORD = f"Pw2-{uuid.uuid4().hex}-secret"
AUTH = [("authorization", f"Bearer {TOKEN}")]


@pytest.fixture(scope="module")
def observed(database_url: str) -> Iterator[ServerProcess]:
    with ServerProcess(observed_env(database_url, TOKEN)) as process:
        yield process


@pytest.fixture
def users(observed: ServerProcess) -> Iterator[Any]:
    with grpc.insecure_channel(observed.address) as channel:
        yield user_service_pb2_grpc.UserServiceStub(channel)


def test_given_request_id_is_echoed_and_logged(users: Any, observed: ServerProcess) -> None:
    rid = f"test-{uuid.uuid4().hex}"
    _, call = users.ListUsers.with_call(
        user_service_pb2.ListUsersRequest(),
        metadata=[*AUTH, ("x-request-id", rid)],
        timeout=5,
    )
    assert response_request_ids(call) == [rid]
    (entry,) = wait_for_entry(observed, rid)
    assert entry["method"] == "/blog.v1.UserService/ListUsers"
    assert entry["code"] == "OK"
    assert isinstance(entry["duration_ms"], int | float) and entry["duration_ms"] >= 0
    assert entry["level"] == "INFO"


def test_request_id_is_generated_when_absent_and_echoed_on_errors(
    users: Any, observed: ServerProcess
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        users.GetUser(user_service_pb2.GetUserRequest(id=987654), metadata=AUTH, timeout=5)
    error: Any = caught.value
    assert error.code() == grpc.StatusCode.NOT_FOUND
    (rid,) = response_request_ids(error)
    assert len(rid) >= 16
    (entry,) = wait_for_entry(observed, rid)
    assert entry["code"] == "NOT_FOUND"
    assert entry["method"] == "/blog.v1.UserService/GetUser"

    _, first = users.ListUsers.with_call(user_service_pb2.ListUsersRequest(), metadata=AUTH)
    _, second = users.ListUsers.with_call(user_service_pb2.ListUsersRequest(), metadata=AUTH)
    assert response_request_ids(first) != response_request_ids(second)


def test_unauthenticated_calls_get_an_id_and_a_log_line(
    users: Any, observed: ServerProcess
) -> None:
    rid = f"anon-{uuid.uuid4().hex}"
    with pytest.raises(grpc.RpcError) as caught:
        users.ListUsers(
            user_service_pb2.ListUsersRequest(), metadata=[("x-request-id", rid)], timeout=5
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert response_request_ids(caught.value) == [rid]
    (entry,) = wait_for_entry(observed, rid)
    assert entry["code"] == "UNAUTHENTICATED"


def test_every_line_is_json_and_no_secret_is_ever_logged(
    users: Any, observed: ServerProcess
) -> None:
    suffix = uuid.uuid4().hex[:8]
    rid = f"secret-{suffix}"
    meta = [*AUTH, ("x-request-id", rid)]
    calls_with_secrets(users, meta, PASSWORD, NEW_PASSWORD)
    with pytest.raises(grpc.RpcError):  # too long: a validation failure must not echo it
        users.CreateUser(
            user_service_pb2.CreateUserRequest(
                email="x@example.com", username="xyz", password=PASSWORD * 40
            ),
            metadata=meta,
            timeout=10,
        )
    with pytest.raises(grpc.RpcError):  # a wrong token, close to the right one
        users.ListUsers(
            user_service_pb2.ListUsersRequest(),
            metadata=[("authorization", f"Bearer {TOKEN}0")],
            timeout=5,
        )
    entries = wait_for_entry(observed, rid, at_least=5)
    assert len(entries) >= 5
    # Every line of these calls carries the request id; the calls each logged one line.
    assert {e["method"] for e in entries} == {
        "/blog.v1.UserService/CreateUser",
        "/blog.v1.UserService/AuthenticateUser",
        "/blog.v1.UserService/ChangePassword",
    }
    output = observed.output()
    for secret in (PASSWORD, NEW_PASSWORD, TOKEN, "$argon2"):
        assert secret not in output, secret
    log_entries(observed)  # every line, whatever logged it, parses as one JSON object


def test_metrics_count_calls_by_method_and_code_and_show_the_pools(
    users: Any, observed: ServerProcess
) -> None:
    users.ListUsers(user_service_pb2.ListUsersRequest(), metadata=AUTH, timeout=5)
    with pytest.raises(grpc.RpcError):
        users.GetUser(user_service_pb2.GetUserRequest(id=424242), metadata=AUTH, timeout=5)
    text = scrape(observed)
    lines = text.splitlines()

    def has(prefix: str, *parts: str) -> bool:
        return any(line.startswith(prefix) and all(p in line for p in parts) for line in lines)

    assert has(
        "grpc_server_handled_total{",
        'grpc_method="ListUsers"',
        'grpc_service="blog.v1.UserService"',
        'grpc_code="OK"',
        'grpc_type="unary"',
    )
    assert has("grpc_server_handled_total{", 'grpc_method="GetUser"', 'grpc_code="NotFound"')
    assert has("grpc_server_started_total{", 'grpc_method="ListUsers"')
    assert has("grpc_server_handling_seconds_bucket{", 'grpc_method="ListUsers"', 'le="+Inf"')
    assert has("grpc_server_handling_seconds_count{", 'grpc_method="ListUsers"')
    for gauge in ("db_pool_checked_out", "db_pool_idle"):
        for pool in ("writer", "reader"):
            assert has(gauge + "{", f'pool="{pool}"'), (gauge, pool)
    checked_out = [
        float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("db_pool_checked_out{")
    ]
    assert checked_out and all(v == 0 for v in checked_out)

    before = handled_total(text, 'grpc_method="ListUsers"', 'grpc_code="OK"')
    users.ListUsers(user_service_pb2.ListUsersRequest(), metadata=AUTH, timeout=5)
    assert (
        handled_total(scrape(observed), 'grpc_method="ListUsers"', 'grpc_code="OK"') == before + 1
    )


def test_db_echo_logs_each_statement_with_its_call_and_never_its_parameters(
    database_url: str,
) -> None:
    env = {"DATABASE_URL": database_url, "LOG_FORMAT": "json", "DB_ECHO": "true"}
    suffix = uuid.uuid4().hex[:8]
    rid = f"echo-{suffix}"
    with ServerProcess(env) as process, grpc.insecure_channel(process.address) as channel:
        stub = user_service_pb2_grpc.UserServiceStub(channel)
        meta = (("x-request-id", rid),)
        user = stub.CreateUser(
            user_service_pb2.CreateUserRequest(
                email=f"e{suffix}@example.com", username=f"e{suffix}", password=PASSWORD
            ),
            metadata=meta,
            timeout=1.5,  # too close for its INSERT to run alone: BEGIN and COMMIT are logged too
        )
        stub.GetUser(user_service_pb2.GetUserRequest(id=user.id), metadata=meta, timeout=10)
        entries = wait_for_entry(process, rid)
        time.sleep(0.2)  # the statement lines are written after the call's own line
        statements = [
            e["message"]
            for e in log_entries(process)
            if e.get("logger") == "service.sql" and e.get("request_id") == rid
        ]
        output = process.output()

    assert entries
    assert any(s.startswith("BEGIN") for s in statements), statements
    assert any("INSERT INTO users" in s for s in statements), statements
    assert any(s.startswith("COMMIT") for s in statements), statements
    assert any("FROM users" in s and "WHERE users.id = $1" in s for s in statements), statements
    for secret in (PASSWORD, "$argon2", f"e{suffix}@example.com"):
        assert secret not in output, secret


def test_a_stream_the_client_cancels_is_logged_and_counted_cancelled(
    users: Any, observed: ServerProcess
) -> None:
    """Read one post, then cancel: one INFO line with code CANCELLED, no ERROR and no
    traceback, and the Canceled counter moves. Before: UNKNOWN, with an ERROR traceback."""
    author = users.CreateUser(
        user_service_pb2.CreateUserRequest(
            email=f"{uuid.uuid4().hex[:8]}@example.com",
            username=f"s{uuid.uuid4().hex[:8]}",
            password="password-123",
        ),
        metadata=AUTH,
        timeout=5,
    )
    with grpc.insecure_channel(observed.address) as channel:
        posts: Any = post_service_pb2_grpc.PostServiceStub(channel)
        for i in range(50):
            posts.CreatePost(
                post_service_pb2.CreatePostRequest(
                    author_id=author.id, title=f"t{i}", content="x" * 2000
                ),
                metadata=AUTH,
                timeout=5,
            )
        rid = f"cancel-{uuid.uuid4().hex}"
        stream = posts.StreamPosts(
            post_service_pb2.StreamPostsRequest(author_id=author.id),
            metadata=[*AUTH, ("x-request-id", rid)],
            timeout=30,
        )
        next(stream)
        stream.cancel()
    (entry,) = wait_for_entry(observed, rid)
    assert entry["code"] == "CANCELLED", entry
    assert entry["method"] == "/blog.v1.PostService/StreamPosts"
    assert not [e for e in log_entries(observed) if e.get("level") == "ERROR"]
    assert "Traceback" not in observed.output()
