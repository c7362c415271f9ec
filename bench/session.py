"""The servers of one benchmark run and their lifecycle: database, service, bare server.

By default the run owns everything: it picks the database (see `servers.Database`), applies the
migrations, seeds, starts `python -m service` and the bare server, and stops them at the end.
With `--target` it loads a server that is already running and starts only the bare server.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

from bench import dataset, procstat, seed, servers
from bench.runner import Target


class Log:
    """Prints, and keeps a copy in `output.txt` of the run's results directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        with self.path.open("a") as sink:
            sink.write(text + "\n")


class Session:
    """What one run has started, and how to reach it."""

    def __init__(
        self,
        out: Path,
        log: Log,
        target: str | None,
        metrics_urls: list[str],
        pid: int | None,
        use_seed: bool,
        module: str = "service",
    ) -> None:
        self.out, self.log, self.module = out, log, module
        self._stops: list[Callable[[], None]] = []
        self.db: servers.Database | None = None
        self.service_server: servers.Server | None = None
        self.bare_server: servers.Server | None = None
        self.bare = Target("", label="bare")
        if target:
            self.service = Target(target, pid, tuple(metrics_urls))
            url = os.environ.get("DATABASE_URL") or os.environ.get("BENCH_DATABASE_URL")
            if url and use_seed:
                self.data = asyncio.run(seed.seed(url))
            else:
                log("no database URL: requests are built from the service's newest rows")
                self.data = dataset.from_api(target)
        else:
            self.db = servers.Database()
            self._stops.append(self.db.stop)
            log(f"database: {self.db.source}")
            servers.migrate(self.db.url)
            self.data = asyncio.run(seed.seed(self.db.url))
            self.service = Target("")
        log(f"data: {self.data.users} users, {self.data.posts} posts")

    @property
    def owns_service(self) -> bool:
        return self.db is not None

    def start_service(self, workers: int) -> None:
        """(Re)starts the service with GRPC_WORKERS=`workers` (only when the run owns it)."""
        if self.db is None:
            return
        if self.service_server is not None:
            self.service_server.stop()
        server, port = servers.start_service(self.db.url, workers, self.out, self.module)
        self.service_server = server
        self._stops.append(server.stop)
        urls = tuple(f"http://127.0.0.1:{port + i}/metrics" for i in range(workers))
        self.service = Target(server.target, server.pid, urls)
        if workers > 1:
            time.sleep(2)  # let every worker bind the port before connections are spread
        self.log(f"service: pid {server.pid}, {server.target}, GRPC_WORKERS={workers}")

    def start_bare(self, uvloop: bool, workers: int) -> None:
        """(Re)starts the bare server."""
        if self.bare_server is not None:
            self.bare_server.stop()
        self.bare_server = servers.start_bare(uvloop, workers, self.out)
        self._stops.append(self.bare_server.stop)
        self.bare = Target(self.bare_server.target, self.bare_server.pid, label="bare")
        if workers > 1:
            time.sleep(2)
        loop = "uvloop" if uvloop else "default asyncio"
        self.log(f"bare server: pid {self.bare_server.pid}, {loop} loop, {workers} worker(s)")

    def service_uses_uvloop(self) -> bool | None:
        """Whether the service's processes loaded uvloop; None when its pid is unknown."""
        if self.service.pid is None:
            return None
        return any(procstat.uses_uvloop(p) for p in procstat.tree(self.service.pid))

    def close(self) -> None:
        for stop in reversed(self._stops):
            try:
                stop()
            except Exception as exc:  # keep stopping the rest
                self.log(f"bench: while stopping: {exc!r}")
