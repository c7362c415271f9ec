"""Embedded PostgreSQL servers as the fault tests need them: a streaming standby of a primary."""

from __future__ import annotations

import logging
import time

from devtools.embedded import HOST, SUPERUSER, EmbeddedPostgres

log = logging.getLogger(__name__)


class ReplicaPostgres(EmbeddedPostgres):
    """An embedded cluster built as a streaming standby of another (tests/test_replicas.py)."""

    def init_replica_of(self, primary: EmbeddedPostgres) -> None:
        """Make this (not yet initialised) cluster a streaming standby of a running primary.

        pg_basebackup -R copies the primary's files, our embedded.conf included (start() rewrites
        it with this server's port), and adds standby.signal and primary_conninfo. Through run(),
        because as root it must run as the server's OS user into a directory that user owns.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.fix_ownership()
        with self.locked():
            if self.pgdata.exists():
                raise RuntimeError(f"{self.pgdata} already exists; a replica needs a fresh one")
            began = time.monotonic()
            args = ["-h", HOST, "-p", str(primary.port), "-U", SUPERUSER, "-D", str(self.pgdata)]
            done = self.run("pg_basebackup", *args, "-R", "-X", "stream", "-c", "fast")
            if done.returncode != 0:
                raise RuntimeError(f"pg_basebackup into {self.pgdata} failed: {done.stderr}")
            log.info("base backup of :%d in %.2fs", primary.port, time.monotonic() - began)
