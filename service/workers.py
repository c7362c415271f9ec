"""GRPC_WORKERS=N: N serving processes on one port (SO_REUSEPORT), under a small supervisor.

Workers are forked before any server, loop or engine exists, so each builds its own. The
supervisor forwards SIGTERM/SIGINT, restarts a worker that dies unexpectedly, and exits 0
once every worker has stopped after a signal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable

log = logging.getLogger(__name__)
RESTART_BACKOFF = 1.0


def supervise(count: int, run_worker: Callable[[int], int]) -> int:
    """Runs `run_worker(index)` in `count` forked processes until a signal; returns the exit code."""
    workers: dict[int, int] = {}  # pid -> index
    stopping = False

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 1
            try:
                code = run_worker(index)
            finally:
                logging.shutdown()  # os._exit skips the interpreter's exit: write buffered lines
                os._exit(code)
        workers[pid] = index
        log.info("worker %d started (pid %d)", index, pid)

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for index in range(count):
        spawn(index)
    failed = False
    while workers:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        if pid not in workers:
            continue
        index = workers.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            log.info("worker %d (pid %d) exited with %d", index, pid, code)
            failed |= code != 0
        else:
            log.error("worker %d (pid %d) died with %d; restarting", index, pid, code)
            time.sleep(RESTART_BACKOFF)
            spawn(index)
    return 1 if failed else 0
