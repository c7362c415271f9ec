"""How GRPC_WORKERS=2 shares the machine: calls per worker, and PostgreSQL's cores.

The kernel places each connection on a worker once (SO_REUSEPORT hashing), so the calls each
worker answered (its own /metrics) show how evenly a run's connections fell; PostgreSQL's
processes' CPU time over the run shows what the database took of the machine's cores.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TypeVar

import psutil

from bench import metrics

T = TypeVar("T")


def calls_per_worker(urls: Iterable[str], methods: set[tuple[str, str]]) -> list[int]:
    """Calls each worker has handled so far, one figure per metrics URL (0 if unreachable)."""
    counts = []
    for url in urls:
        samples = metrics.scrape([url])
        counts.append(
            0 if samples is None else int(sum(metrics.handled(samples, methods).values()))
        )
    return counts


def postgres_cpu_seconds() -> float:
    """User + system CPU seconds of every local PostgreSQL process (backends included)."""
    total = 0.0
    for proc in psutil.process_iter(["name", "cpu_times"]):
        times = proc.info["cpu_times"]
        if proc.info["name"] in ("postgres", "postmaster") and times is not None:
            total += times.user + times.system
    return total


def postgres_cores(run: Callable[[], T]) -> tuple[T, float]:
    """`run()`'s result and the cores PostgreSQL kept busy on average while it ran."""
    cpu, began = postgres_cpu_seconds(), time.monotonic()
    result = run()
    return result, (postgres_cpu_seconds() - cpu) / max(time.monotonic() - began, 1e-9)
