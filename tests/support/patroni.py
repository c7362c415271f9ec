"""A real Patroni cluster for tests: one etcd and two Patroni-managed PostgreSQL 15 nodes.

Debian's `patroni` and `etcd-server` packages and PostgreSQL 15 binaries (`.ci/run` installs
them); `available()` says whether they are here. Everything runs on free loopback ports from a
throwaway directory; PostgreSQL runs as the `postgres` OS user (it refuses root). Each process
gets its own session, and `stop()` (or `kill()`) ends every process of a node by its tree.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from tests.support.paths import ROOT
from tests.support.processes import free_port

PATRONI = shutil.which("patroni") or "/usr/bin/patroni"
PATRONICTL = shutil.which("patronictl") or "/usr/bin/patronictl"
ETCD = shutil.which("etcd") or "/usr/bin/etcd"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
RENDER = ROOT / "deploy" / "patroni" / "render.py"
OS_USER = "postgres"


def missing() -> list[str]:
    """What of Patroni, etcd and PostgreSQL 15 is not installed."""
    wanted = [Path(PATRONI), Path(PATRONICTL), Path(ETCD), PG_BIN / "postgres"]
    gone = [str(p) for p in wanted if not p.is_file()]
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(OS_USER)
        except KeyError:
            gone.append(f"the {OS_USER} OS user")
    return gone


@dataclass
class Node:
    name: str
    pg_port: int
    rest_port: int
    config: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def pg_address(self) -> str:
        return f"127.0.0.1:{self.pg_port}"


def _kill_tree(process: psutil.Process, signum: int) -> None:
    try:
        family = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.send_signal(signum)


class PatroniCluster:
    def __init__(self, names: tuple[str, ...] = ("pg1", "pg2")) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="blog-patroni-"))
        self._as_user: dict[str, Any] = {}
        if os.geteuid() == 0:
            account = pwd.getpwnam(OS_USER)
            os.chown(self.dir, account.pw_uid, account.pw_gid)
            self._as_user = {"user": account.pw_uid, "group": account.pw_gid}
        self.etcd_port, self.etcd_peer_port = free_port(), free_port()
        self.etcd: subprocess.Popen[bytes] | None = None
        self.nodes = {
            name: Node(name, free_port(), free_port(), self.dir / f"{name}.yml") for name in names
        }

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> PatroniCluster:
        self._start_etcd()
        for node in self.nodes.values():
            node.config.write_text(self._render(node))
        first, *others = self.nodes.values()
        self._start_node(first)
        self.wait(lambda c: self._role(c, first.name) == "leader", timeout, "a bootstrapped leader")
        for node in others:
            self._start_node(node)
        self.wait_ready(timeout)
        return self

    def _start_etcd(self) -> None:
        client = f"http://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        command = [ETCD, "--name", "etcd0", "--data-dir", str(self.dir / "etcd")]
        command += ["--listen-client-urls", client, "--advertise-client-urls", client]
        command += ["--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer]
        command += ["--initial-cluster", f"etcd0={peer}", "--log-level", "warn"]
        self.etcd = subprocess.Popen(
            command,
            stdout=(self.dir / "etcd.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        end = time.monotonic() + 20
        while time.monotonic() < end:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{client}/health", timeout=1) as response,
            ):
                if json.loads(response.read()).get("health") == "true":
                    return
            time.sleep(0.1)
        raise AssertionError("etcd did not become healthy:\n" + self.log("etcd"))

    def _render(self, node: Node) -> str:
        command = [sys.executable, str(RENDER), "--name", node.name]
        command += ["--pg-port", str(node.pg_port), "--rest-port", str(node.rest_port)]
        command += ["--etcd", f"127.0.0.1:{self.etcd_port}"]
        command += ["--data-dir", str(self.dir / node.name), "--socket-dir", str(self.dir)]
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout

    def _start_node(self, node: Node) -> None:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.dir), "LANG": "C.UTF-8"}
        node.process = subprocess.Popen(
            [PATRONI, str(node.config)],
            cwd=self.dir,
            env=env,
            stdout=(self.dir / f"{node.name}.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **self._as_user,
        )

    def kill(self, name: str) -> None:
        """SIGKILL a node: its Patroni, its postmaster and every backend, at once."""
        node = self.nodes[name]
        processes = self._processes_of(node)
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(processes, timeout=5)

    def _processes_of(self, node: Node) -> list[psutil.Process]:
        found: list[psutil.Process] = []
        roots = []
        if node.process is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                roots.append(psutil.Process(node.process.pid))
        pid_file = self.dir / node.name / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, psutil.NoSuchProcess):
            roots.append(psutil.Process(int(pid_file.read_text().split()[0])))
        for root in roots:
            with contextlib.suppress(psutil.NoSuchProcess):
                found += [root, *root.children(recursive=True)]
        return list({p.pid: p for p in found}.values())

    def stop(self) -> None:
        """Stops every node (Patroni stops its PostgreSQL), then etcd; kills what lingers."""
        for node in self.nodes.values():
            if node.process is not None and node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes.values():
            if node.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.process.wait(20)
            self.kill(node.name)
        if self.etcd is not None and self.etcd.poll() is None:
            _kill_tree(psutil.Process(self.etcd.pid), 9)
            self.etcd.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- state -------------------------------------------------------------------------------

    def log(self, name: str) -> str:
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def members(self) -> list[dict[str, Any]]:
        """Patroni's own view (GET /cluster) from the first node that answers."""
        for node in self.nodes.values():
            with contextlib.suppress(OSError, ValueError):
                url = f"http://127.0.0.1:{node.rest_port}/cluster"
                with urllib.request.urlopen(url, timeout=1) as response:
                    members: list[dict[str, Any]] = json.loads(response.read())["members"]
                    return members
        return []

    @staticmethod
    def _role(members: list[dict[str, Any]], name: str) -> str | None:
        for member in members:
            if member["name"] == name:
                return str(member["role"])
        return None

    def primary(self) -> str | None:
        for member in self.members():
            if member["role"] == "leader" and member["state"] == "running":
                return str(member["name"])
        return None

    def wait(self, ready: Any, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            members = self.members()
            if members and ready(members):
                return
            time.sleep(0.2)
        logs = "\n".join(f"--- {n}\n{self.log(n)}" for n in self.nodes)
        raise AssertionError(f"no {what} within {timeout}s: {self.members()}\n{logs}")

    def wait_ready(self, timeout: float = 60.0) -> None:
        """A running leader and a synchronous standby that replicates (Patroni 3.0 says
        `running`, later versions `streaming`)."""

        def ready(members: list[dict[str, Any]]) -> bool:
            roles = {(m["role"], m["state"]) for m in members}
            standby = roles & {("sync_standby", "running"), ("sync_standby", "streaming")}
            return ("leader", "running") in roles and bool(standby)

        self.wait(ready, timeout, "leader with a streaming synchronous standby")

    def switchover(self, leader: str, candidate: str) -> subprocess.CompletedProcess[str]:
        command = [PATRONICTL, "-c", str(self.nodes[leader].config), "switchover"]
        command += ["--leader", leader, "--candidate", candidate, "--force"]
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def url(self, *, database: str, **query: str) -> str:
        """A SQLAlchemy URL naming every node (multi-host), with extra query parameters."""
        hosts = "&".join(f"host={n.pg_address}" for n in self.nodes.values())
        extra = "".join(f"&{k}={v}" for k, v in query.items())
        return f"postgresql+asyncpg://postgres@/{database}?{hosts}{extra}"

    def node_url(self, name: str, database: str) -> str:
        return f"postgresql+asyncpg://postgres@{self.nodes[name].pg_address}/{database}"
