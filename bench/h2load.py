"""Runs a unary workload with h2load (nghttp2's C load generator) and reads its per-request log.

h2load posts one body file per process (`-d`), and its URIs differ only by path, so a workload
with K distinct requests (e.g. GetUser over many ids) runs as several h2load processes in
parallel: `connections` processes, each with one HTTP/2 connection (`-c 1`), one of the bodies,
and its share of the `concurrency` streams (`-m`). Their `--log-file`s (start µs, HTTP status,
duration µs per request) are merged for the latency figures. h2load cannot see gRPC trailers:
the gRPC status codes come from the server's metrics (see `metrics`), not from here.

A warm-up run precedes the measured one, so that the server-side counters read around the
measured run cover exactly it (plus the calls in flight when h2load stops).
"""

from __future__ import annotations

import resource
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from bench.grpcframe import write_body
from bench.model import LoadResult, Workload

HEADERS = ("content-type: application/grpc", "te: trailers")
MISSING = (
    "h2load not found: install it with `apt-get install nghttp2-client` (Debian/Ubuntu) "
    "for a load generator that is not the bottleneck; falling back to the Python client."
)


def path() -> str | None:
    """The h2load executable, if installed."""
    return shutil.which("h2load")


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _launch(target: str, workload: Workload, workdir: Path, seconds: float, log: bool) -> float:
    """Runs the workload's processes for `seconds`; returns the CPU seconds they used."""
    exe = path()
    if exe is None:
        raise RuntimeError(MISSING)
    procs = min(workload.connections, workload.concurrency)
    cpu_before = _children_cpu()
    bodies = [
        write_body(workdir / f"body-{i}.bin", c.payload) for i, c in enumerate(workload.calls)
    ]
    running: list[tuple[subprocess.Popen[bytes], Path]] = []
    for i in range(procs):
        call, body = workload.calls[i % len(workload.calls)], bodies[i % len(workload.calls)]
        streams = workload.concurrency // procs + (1 if i < workload.concurrency % procs else 0)
        cmd = [exe, "-D", _duration(seconds), "-c", "1", "-m", str(streams), "-d", str(body)]
        for header in HEADERS:
            cmd += ["-H", header]
        if log:
            cmd += ["--log-file", str(workdir / f"log-{i}.tsv")]
        out = workdir / f"out-{i}.txt"
        with out.open("wb") as sink:
            proc = subprocess.Popen(
                [*cmd, f"http://{target}{call.method}"], stdout=sink, stderr=sink
            )
        running.append((proc, out))
    for proc, out in running:
        if proc.wait() != 0:
            raise RuntimeError(f"h2load failed ({proc.returncode}): {out.read_text()[-2000:]}")
    return _children_cpu() - cpu_before


def run(
    target: str,
    workload: Workload,
    workdir: Path,
    on_start: Callable[[], None] = lambda: None,
    on_end: Callable[[], None] = lambda: None,
) -> LoadResult:
    """Warms up, then measures `workload` against `target` ("host:port"). Needs uniform weights.

    `on_start` / `on_end` run right before and after the measured run (to read server counters).
    """
    if not workload.uniform or workload.stream:
        raise ValueError("h2load runs unary workloads whose requests all have the same weight")
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in workdir.glob("log-*.tsv"):
        stale.unlink()
    if workload.warmup_s > 0:
        _launch(target, workload, workdir, workload.warmup_s, log=False)
    on_start()
    cpu = _launch(target, workload, workdir, workload.duration_s, log=True)
    on_end()
    latencies, statuses = [], Counter[str]()
    first, last = None, None
    for log in sorted(workdir.glob("log-*.tsv")):
        for line in log.read_text().splitlines():
            start_us, status, duration_us = (int(v) for v in line.split("\t")[:3])
            first = start_us if first is None else min(first, start_us)
            last = max(last or 0, start_us + duration_us)
            if status == 200:
                latencies.append(duration_us * 1000)
            else:
                statuses["stream failed" if status < 0 else f"HTTP {status}"] += 1
    total_ns = int(workload.duration_s * 1e9)
    if first is not None and last is not None:
        total_ns = max(total_ns, (last - first) * 1000)
    return LoadResult(
        generator="h2load",
        count=len(latencies) + sum(statuses.values()),
        total_ns=total_ns,
        latencies_ns=latencies,
        errors={f"h2load: {k}": v for k, v in statuses.items()},
        status_source="unverified",
        client_cpu_s=cpu,
    )
