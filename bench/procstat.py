"""Process facts from /proc: a server's process tree, its CPU time, its RSS, and its event loop.

A server started with GRPC_WORKERS=N is a tree of processes, so every figure is summed over the
root pid and all its descendants. `RssSampler` reads VmRSS every 50 ms in a thread.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on; comm may hold spaces


def tree(pid: int) -> list[int]:
    """`pid` and all of its live descendants."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                parents.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by `pid` and its descendants."""
    total = 0
    for member in tree(pid):
        fields = _stat_fields(member)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICKS


def machine_busy_seconds() -> float:
    """CPU seconds all cores of the machine have spent busy (not idle, not in iowait) so far."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / _TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` and its descendants, in bytes."""
    total = 0
    for member in tree(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def uses_uvloop(pid: int) -> bool:
    """Whether uvloop's extension module is loaded in `pid` (a hint that it runs uvloop)."""
    try:
        return "uvloop" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


class RssSampler(threading.Thread):
    """Samples `rss_bytes(pid)` every `interval` seconds until `stop()`; keeps first/peak/last."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.first = self.peak = self.last = rss_bytes(pid)
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self.interval):
            self.last = rss_bytes(self.pid)
            self.peak = max(self.peak, self.last)

    def stop(self) -> None:
        self._stopped.set()
        self.join()
        self.last = rss_bytes(self.pid)
        self.peak = max(self.peak, self.last)
