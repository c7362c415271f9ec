"""`python -m service` as a child process, free ports, and waiting on its health."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.paths import ROOT
from tests.support.servers import FAST_ARGON2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`python -m service` as a child process, as an operator runs it."""

    def __init__(
        self,
        env: dict[str, str],
        port: int | None = None,
        *,
        module: str = "service",
        cwd: Path = ROOT,
        unset: tuple[str, ...] = (),
        own_group: bool = False,
    ) -> None:
        self.port = port or free_port()
        self.env = {**os.environ, **FAST_ARGON2, "GRPC_PORT": str(self.port), **env}
        for name in unset:
            self.env.pop(name, None)
        self.module = module
        self.cwd = cwd
        self.own_group = own_group
        self.process: subprocess.Popen[str] | None = None
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"blog-server-{self.port}.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, wait_serving: bool = True, timeout: float = 20.0) -> ServerProcess:
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module],
            cwd=self.cwd,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
            # A process group of its own, as a command started from a terminal has (`interrupt`).
            start_new_session=self.own_group,
        )
        if wait_serving:
            wait_for_health(self.address, health_pb2.HealthCheckResponse.SERVING, timeout, self)
        return self

    def output(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def interrupt(self) -> None:
        """Ctrl-C, as a terminal sends it: SIGINT to the whole process group."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGINT)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)

    def __enter__(self) -> ServerProcess:
        # `with ServerProcess(env).start() as server` must not start a second server (the
        # first would outlive the test: stop() only knows the last one).
        return self if self.process is not None else self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def health_status(address: str, timeout: float = 1.0, credentials: Any = None) -> int | None:
    channel = (
        grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
    )
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout).status)
    except grpc.RpcError:
        return None
    finally:
        channel.close()


def wait_for_health(
    address: str, status: int, timeout: float, process: ServerProcess | None = None
) -> float:
    """Seconds until health reports `status`; fails the test after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if health_status(address) == status:
            return time.monotonic() - start
        if process and process.process and process.process.poll() is not None:
            raise AssertionError(f"server exited {process.process.returncode}:\n{process.output()}")
        time.sleep(0.05)
    raise AssertionError(f"health never became {status} within {timeout}s")
