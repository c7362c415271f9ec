"""GRPC_WORKERS=2, for real: two worker processes share one port under a supervisor, which
restarts a worker killed with SIGKILL and forwards SIGTERM to every worker.
"""

from __future__ import annotations

import os
import signal
import time

import grpc
import psutil
from blog.v1 import user_service_pb2, user_service_pb2_grpc

from tests.support import ServerProcess


def workers_of(process: ServerProcess, count: int, within: float = 10.0) -> list[psutil.Process]:
    assert process.process is not None
    supervisor = psutil.Process(process.process.pid)
    end = time.monotonic() + within
    while True:
        children = [c for c in supervisor.children() if c.status() != psutil.STATUS_ZOMBIE]
        if len(children) == count or time.monotonic() > end:
            return children
        time.sleep(0.05)


def calls_succeed(address: str, count: int = 20) -> None:
    # A fresh channel per call spreads the connections over both workers (SO_REUSEPORT).
    for i in range(count):
        with grpc.insecure_channel(address) as channel:
            stub = user_service_pb2_grpc.UserServiceStub(channel)
            stub.ListUsers(user_service_pb2.ListUsersRequest(page_size=1), timeout=5)
            if i == 0:
                stub.CreateUser(
                    user_service_pb2.CreateUserRequest(
                        email=f"w{os.getpid()}{time.monotonic_ns()}@example.com",
                        username=f"w{time.monotonic_ns()}",
                        password="password-123",
                    ),
                    timeout=5,
                )


def listening_pids(port: int) -> set[int]:
    pids = set()
    for connection in psutil.net_connections("tcp"):
        listening = connection.status == psutil.CONN_LISTEN and connection.laddr.port == port
        if listening and connection.pid is not None:
            pids.add(connection.pid)
    return pids


def test_two_workers_serve_one_port_survive_a_kill_and_stop_on_sigterm(database_url: str) -> None:
    process = ServerProcess({"DATABASE_URL": database_url, "GRPC_WORKERS": "2"}).start()
    try:
        workers = workers_of(process, 2)
        assert len(workers) == 2, process.output()
        pids = {w.pid for w in workers}
        # Both workers listen on the one port; the supervisor itself does not serve.
        end = time.monotonic() + 10
        while listening_pids(process.port) != pids and time.monotonic() < end:
            time.sleep(0.1)
        assert listening_pids(process.port) == pids
        calls_succeed(process.address)

        victim = workers[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait(5)
        # The other worker keeps serving while the supervisor restarts the dead one.
        calls_succeed(process.address, 5)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            replaced = workers_of(process, 2, within=0.5)
            now = {w.pid for w in replaced}
            if len(now) == 2 and victim.pid not in now:
                break
            time.sleep(0.1)
        assert len(now) == 2 and victim.pid not in now, process.output()
        assert workers[1].pid in now
        end = time.monotonic() + 10
        while listening_pids(process.port) != now and time.monotonic() < end:
            time.sleep(0.1)
        assert listening_pids(process.port) == now
        calls_succeed(process.address)

        assert process.process is not None
        process.signal(signal.SIGTERM)
        assert process.wait(15) == 0, process.output()
        for pid in now:
            assert (
                not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
            )
    finally:
        process.stop()
