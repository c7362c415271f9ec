"""What a server process tells an operator: its JSON log lines, its metrics, its request ids."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Sequence
from typing import Any

import grpc
import pytest
from blog.v1 import resources_pb2, user_service_pb2

from tests.support.processes import ServerProcess, free_port


def observed_env(database_url: str, token: str) -> dict[str, str]:
    """A server that logs JSON at INFO, serves metrics and requires `token`."""
    return {
        "DATABASE_URL": database_url,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "METRICS_PORT": str(free_port()),
        "AUTH_TOKENS": token,
    }


def response_request_ids(call: Any) -> list[str]:
    metadata = [*(call.initial_metadata() or ()), *(call.trailing_metadata() or ())]
    return [value for key, value in metadata if key == "x-request-id"]


def log_entries(process: ServerProcess) -> list[dict[str, Any]]:
    entries = []
    for line in process.output().splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)  # every line must be one JSON object
        assert isinstance(entry, dict), line
        entries.append(entry)
    return entries


def wait_for_entry(
    process: ServerProcess, request_id: str, at_least: int = 1
) -> list[dict[str, Any]]:
    """The log entries of `request_id`, once at least `at_least` of them are written (up to 3 s):
    the server writes its lines in batches (service.logs)."""
    end = time.monotonic() + 3
    while True:
        mine = [e for e in log_entries(process) if e.get("request_id") == request_id]
        if len(mine) >= at_least or time.monotonic() > end:
            return mine
        time.sleep(0.02)


def scrape(process: ServerProcess) -> str:
    port = process.env["METRICS_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


def handled_total(text: str, *parts: str) -> float:
    """grpc_server_handled_total of the series whose labels contain every one of `parts`."""
    for line in text.splitlines():
        if line.startswith("grpc_server_handled_total{") and all(p in line for p in parts):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def calls_with_secrets(
    users: Any, metadata: Sequence[tuple[str, str]], password: str, new_password: str
) -> resources_pb2.User:
    """The calls whose requests carry a password, as a client makes them (a sync stub): CreateUser,
    AuthenticateUser by email (right) and by username (wrong), ChangePassword. Tests then look for
    the secrets where they must never appear: log lines, spans. Returns the user."""
    name = f"s{uuid.uuid4().hex[:8]}"
    meta = tuple(metadata)
    user: resources_pb2.User = users.CreateUser(
        user_service_pb2.CreateUserRequest(
            email=f"{name}@example.com", username=name, password=password
        ),
        metadata=meta,
        timeout=10,
    )
    users.AuthenticateUser(
        user_service_pb2.AuthenticateUserRequest(login=user.email, password=password),
        metadata=meta,
        timeout=10,
    )
    with pytest.raises(grpc.RpcError):
        users.AuthenticateUser(
            user_service_pb2.AuthenticateUserRequest(login=user.username, password=new_password),
            metadata=meta,
            timeout=10,
        )
    users.ChangePassword(
        user_service_pb2.ChangePasswordRequest(id=user.id, new_password=new_password),
        metadata=meta,
        timeout=10,
    )
    return user
