"""Process facts, read with psutil: a server's process tree, its CPU time, its RSS, its event loop.

A server started with GRPC_WORKERS=N is a tree of processes, so every figure is summed over the
root pid and all its descendants (a process that exits meanwhile counts no more). `RssSampler`
reads the tree's RSS every 50 ms in a thread.
"""

from __future__ import annotations

import threading

import psutil


def _processes(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree(pid: int) -> list[int]:
    """`pid` and all of its live descendants."""
    return [process.pid for process in _processes(pid)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by `pid` and its descendants."""
    total = 0.0
    for process in _processes(pid):
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def machine_busy_seconds() -> float:
    """CPU seconds all cores of the machine have spent busy (not idle, not in iowait) so far."""
    t = psutil.cpu_times()
    # /proc/stat's user and nice already include guest and guest_nice: not added twice.
    return float(t.user + t.nice + t.system + t.irq + t.softirq + t.steal)


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` and its descendants, in bytes."""
    total = 0
    for process in _processes(pid):
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue
    return total


def uses_uvloop(pid: int) -> bool:
    """Whether uvloop's extension module is loaded in `pid` (a hint that it runs uvloop)."""
    try:
        return any("uvloop" in m.path for m in psutil.Process(pid).memory_maps())
    except psutil.Error:
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
