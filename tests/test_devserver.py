"""`make run` twice on one .data/: the second shares the embedded PostgreSQL, never stops it.

Each devserver runs as a developer starts it from a terminal (`python -m devtools.devserver` in
the working directory that holds .data/, in a process group of its own) and is stopped the way
a developer stops it: Ctrl-C, i.e. SIGINT to its whole process group.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from blog.v1 import user_service_pb2, user_service_pb2_grpc
from grpc_health.v1 import health_pb2

from devtools.embedded import EmbeddedPostgres
from tests.support import ROOT, ServerProcess, health_status

SERVING = health_pb2.HealthCheckResponse.SERVING
# devtools is not installed (not in the wheel): `make run` finds it in the checkout it runs from,
# the test's devservers (run from a directory of their own, for their own .data/) through this.
FROM_THE_CHECKOUT = {"PYTHONPATH": str(ROOT)}
# initdb and the first start of a cluster take a while on a busy machine.
START_TIMEOUT = 120


def _devserver(workdir: Path, port: int | None = None) -> ServerProcess:
    process = ServerProcess(
        {"PAGE_TOKEN_SECRET": "a-test-secret-of-enough-length", **FROM_THE_CHECKOUT},
        port,
        module="devtools.devserver",
        cwd=workdir,
        unset=("DATABASE_URL",),
        own_group=True,
    )
    process.start(timeout=START_TIMEOUT)
    # A developer presses Ctrl-C once start-up has printed `serving on`, not during it.
    deadline = time.monotonic() + 10
    while "serving on" not in process.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    return process


def _interrupt(process: ServerProcess) -> None:
    process.interrupt()
    assert process.wait(60) == 0, process.output()


def _answers(process: ServerProcess) -> None:
    """The server answers a call that needs its database, after health had time to look."""
    time.sleep(2.5)  # longer than two health probes
    assert health_status(process.address) == SERVING, process.output()
    with grpc.insecure_channel(process.address) as channel:
        users = user_service_pb2_grpc.UserServiceStub(channel)
        users.ListUsers(user_service_pb2.ListUsersRequest(), timeout=10)


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    EmbeddedPostgres(tmp_path / ".data/postgres").stop("immediate")


def test_a_second_make_run_shares_the_database_and_never_stops_it(workdir: Path) -> None:
    embedded = EmbeddedPostgres(workdir / ".data/postgres")
    first = _devserver(workdir)
    second = third = None
    try:
        second = _devserver(workdir)  # another port, the same .data/

        # The same port: refused with one line, before it touches the database.
        refused = ServerProcess(
            FROM_THE_CHECKOUT,
            first.port,
            module="devtools.devserver",
            cwd=workdir,
            unset=("DATABASE_URL",),
        )
        refused.start(wait_serving=False)
        assert refused.wait(60) != 0
        lines = refused.output().splitlines()
        assert len(lines) == 1 and "GRPC_PORT" in lines[0], lines
        _answers(first)

        # Ctrl-C on the one that shares it: the first goes on as before.
        _interrupt(second)
        _answers(first)

        # Ctrl-C on the one that started it, while another uses it: left running for that one.
        third = _devserver(workdir)
        _interrupt(first)
        _answers(third)
        _interrupt(third)
        assert embedded.is_running(), "stopped by a make run that did not start it"
    finally:
        for process in (first, second, third):
            if process is not None:
                process.stop()


def test_a_lone_make_run_stops_the_database_it_started(workdir: Path) -> None:
    embedded = EmbeddedPostgres(workdir / ".data/postgres")
    only = _devserver(workdir)
    try:
        assert embedded.is_running()
        _interrupt(only)
        assert not embedded.is_running(), only.output()
    finally:
        only.stop()
