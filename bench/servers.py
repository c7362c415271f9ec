"""Starts and stops what a run needs: PostgreSQL, migrations, the service, the bare server.

The database is DATABASE_URL, else BENCH_DATABASE_URL, else the project's embedded PostgreSQL
(data under .data/bench-pg). Servers run as subprocesses in their own session (so a worker
tree is stopped as a whole), on free ports of 127.0.0.1, with output to a log file.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from bench.seed import asyncpg_dsn
from devtools import devserver

ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_DIR = ROOT / ".data" / "bench-pg"
DATABASE = "bench"


def free_port() -> int:
    """A TCP port of 127.0.0.1 nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> int:
    """The first of `count` consecutive free ports (metrics: one port per worker)."""
    for _ in range(100):
        first = free_port()
        try:
            for port in range(first, first + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
    raise RuntimeError(f"no {count} consecutive free ports")


class Database:
    """The PostgreSQL a run uses; `url` is a SQLAlchemy URL (postgresql+asyncpg://...)."""

    def __init__(self) -> None:
        self.url = os.environ.get("DATABASE_URL") or os.environ.get("BENCH_DATABASE_URL") or ""
        self._embedded: Any = None
        if not self.url:
            module = importlib.import_module("devtools.embedded")
            self._embedded = module.EmbeddedPostgres(data_dir=EMBEDDED_DIR)
            started = self._embedded.start()
            server = started if hasattr(started, "url") else self._embedded
            self.url = str(server.url(DATABASE))
            asyncio.run(_ensure_database(self.url))

    @property
    def source(self) -> str:
        return f"embedded PostgreSQL in {EMBEDDED_DIR}" if self._embedded else "DATABASE_URL"

    def stop(self) -> None:
        if self._embedded is not None and hasattr(self._embedded, "stop"):
            self._embedded.stop()


async def _ensure_database(url: str) -> None:
    """Creates the database `url` names when it does not exist (embedded server only)."""
    dsn = asyncpg_dsn(url)
    head, _, name = dsn.rpartition("/")
    await devserver.create_database(f"{head}/postgres", name.split("?")[0])


def migrate(url: str) -> None:
    """`alembic upgrade head` against `url`; exits with its output if it fails."""
    alembic = Path(sys.executable).with_name("alembic")
    env = {**os.environ, "DATABASE_URL": url}
    done = subprocess.run(
        [str(alembic), "upgrade", "head"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"bench: migrations failed:\n{done.stdout}{done.stderr}")


class Server:
    """A server subprocess on 127.0.0.1:`port`."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int, log: Path):
        self.name, self.port, self.log = name, port, log
        with log.open("ab") as sink:
            self.proc = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=sink, stderr=sink, start_new_session=True
            )

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(
        self, method: str, payload: bytes, expect: bytes | None = None, timeout: float = 60.0
    ) -> None:
        """Waits until `method` answers `expect` (any answer if None); exits if the server died."""
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.target) as channel:
            call = channel.unary_unary(method, None, None)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    tail = self.log.read_text(errors="replace")[-3000:]
                    raise SystemExit(f"bench: {self.name} exited ({self.proc.returncode}):\n{tail}")
                try:
                    reply = call(payload, timeout=2)
                    if expect is None or reply == expect:
                        return
                except grpc.RpcError as exc:
                    if exc.code() is grpc.StatusCode.UNIMPLEMENTED:
                        return
                time.sleep(0.2)
        raise SystemExit(f"bench: {self.name} did not answer on {self.target} in {timeout:.0f} s")

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after 15 s."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_service(url: str, workers: int, logdir: Path, module: str) -> tuple[Server, int]:
    """`python -m <module>` with this run's settings; returns it and its first metrics port.

    Ready once grpc.health.v1.Health/Check says SERVING (status 1, serialized b"\\x08\\x01").
    """
    port, metrics_port = free_port(), free_ports(workers)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": str(port),
        "METRICS_PORT": str(metrics_port),
        "GRPC_WORKERS": str(workers),
    }
    argv = [sys.executable, "-m", module]
    server = Server(f"service (GRPC_WORKERS={workers})", argv, env, port, logdir / "service.log")
    server.wait_ready("/grpc.health.v1.Health/Check", b"", expect=b"\x08\x01")
    return server, metrics_port


def start_bare(uvloop: bool, workers: int, logdir: Path) -> Server:
    """The bare server with the same event loop and worker count as the service."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "bench.bare_server",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    argv += ["--uvloop"] if uvloop else []
    server = Server(
        f"bare server (workers={workers})", argv, dict(os.environ), port, logdir / "bare.log"
    )
    server.wait_ready("/blog.v1.UserService/GetUser", b"", expect=None)
    return server
