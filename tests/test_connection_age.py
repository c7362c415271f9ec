"""GRPC_MAX_CONNECTION_AGE_SECONDS: a client's connection moves between workers over time.

SO_REUSEPORT places a connection on a worker once, for its lifetime. With a maximum age the
server sends GOAWAY, the client reconnects by itself, and the new connection is placed afresh:
one long-lived channel ends up served by both workers, and none of its calls fails meanwhile.
Without it (0) the channel stays on the worker it first reached.
"""

from __future__ import annotations

import time

import grpc
import psutil
from blog.v1 import user_service_pb2, user_service_pb2_grpc

from tests.support import ServerProcess


def _server_side(port: int) -> set[tuple[int, int]]:
    """(worker pid, client port) of this test process's established connections to `port`."""
    ours = {c.laddr.port for c in psutil.Process().net_connections("tcp") if c.raddr}
    return {
        (c.pid, c.raddr.port)
        for c in psutil.net_connections("tcp")
        if c.status == psutil.CONN_ESTABLISHED
        and c.laddr.port == port
        and c.pid is not None
        and c.raddr.port in ours
    }


def _listening(port: int, count: int, within: float = 20.0) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        pids = {
            c.pid
            for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        }
        if len(pids) >= count:
            return True
        time.sleep(0.1)
    return False


def _one_channel(database_url: str, age: str, seconds: float) -> tuple[set[tuple[int, int]], int]:
    """The (worker, client port) pairs that served one channel's calls, and the failed calls.

    Calls go on for `seconds`, or until two workers have served the channel.
    """
    env = {
        "DATABASE_URL": database_url,
        "GRPC_WORKERS": "2",
        "GRPC_MAX_CONNECTION_AGE_SECONDS": age,
    }
    seen: set[tuple[int, int]] = set()
    failed = 0
    with ServerProcess(env) as server:
        assert _listening(server.port, 2), server.output()
        with grpc.insecure_channel(server.address) as channel:
            stub = user_service_pb2_grpc.UserServiceStub(channel)
            end = time.monotonic() + seconds
            while time.monotonic() < end and len({pid for pid, _ in seen}) < 2:
                try:
                    stub.ListUsers(user_service_pb2.ListUsersRequest(page_size=1), timeout=5)
                except grpc.RpcError:
                    failed += 1
                seen |= _server_side(server.port)
                time.sleep(0.05)
    return seen, failed


def test_connections_rebalance_after_their_maximum_age(database_url: str) -> None:
    # A reconnect every ~0.5 s: staying on one worker for 20 s has odds of about 1 in 10^12.
    seen, failed = _one_channel(database_url, "0.5", 20.0)
    assert failed == 0
    assert len({pid for pid, _ in seen}) == 2, seen
    assert len({port for _, port in seen}) >= 2  # the client did reconnect


def test_without_a_maximum_age_a_channel_stays_on_one_worker(database_url: str) -> None:
    seen, failed = _one_channel(database_url, "0", 3.0)
    assert failed == 0
    assert len(seen) == 1, seen  # one connection, on one worker
