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


def _serving_pids(port: int) -> set[int]:
    """Processes holding the server side of an established connection on `port`."""
    return {
        c.pid
        for c in psutil.net_connections("tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port and c.pid is not None
    }


def _workers_seen(database_url: str, age: str, seconds: float) -> tuple[set[int], int]:
    """Which worker pids served one channel's calls for `seconds`, and how many calls failed."""
    env = {
        "DATABASE_URL": database_url,
        "GRPC_WORKERS": "2",
        "GRPC_MAX_CONNECTION_AGE_SECONDS": age,
    }
    seen: set[int] = set()
    failed = 0
    with ServerProcess(env).start() as server:
        time.sleep(1)  # both workers listening
        with grpc.insecure_channel(server.address) as channel:
            stub = user_service_pb2_grpc.UserServiceStub(channel)
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                try:
                    stub.ListUsers(user_service_pb2.ListUsersRequest(page_size=1), timeout=5)
                except grpc.RpcError:
                    failed += 1
                seen |= _serving_pids(server.port)
                time.sleep(0.05)
    return seen, failed


def test_connections_rebalance_after_their_maximum_age(database_url: str) -> None:
    # ~12 reconnects in 6 s: all on the same worker has odds of about 1 in 4,000
    seen, failed = _workers_seen(database_url, "0.5", 6.0)
    assert failed == 0
    assert len(seen) == 2


def test_without_a_maximum_age_a_channel_stays_on_one_worker(database_url: str) -> None:
    seen, failed = _workers_seen(database_url, "0", 3.0)
    assert failed == 0
    assert len(seen) == 1
