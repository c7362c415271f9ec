"""Measures one workload against one server with the right load generator.

h2load runs when it is installed and the workload is uniform unary calls; the Python client runs
mixes, streams, or everything when h2load is missing or `--generator python` is given. Around
the measured window it reads the server's CPU time (/proc) and, when the server has metrics,
its `grpc_server_handled_total` counters: those are the status codes of an h2load run.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import h2load, metrics, procstat, pyclient
from bench.model import LoadResult, Workload


@dataclass
class Target:
    """A server to load: address, optional pid (for CPU and RSS), metrics URLs (one a worker)."""

    address: str
    pid: int | None = None
    metrics_urls: tuple[str, ...] = ()
    label: str = "service"


class _Window:
    """Server CPU time and handled-call counters at the start and end of a measured run."""

    def __init__(self, target: Target, workload: Workload) -> None:
        self.target = target
        self.methods = {(c.service, c.name) for c in workload.calls}
        self.cpu = 0.0
        self.machine = 0.0
        self.before: metrics.Samples | None = None
        self.codes: dict[str, int] | None = None

    def start(self, settle: bool = False) -> None:
        """Reads the counters (after the warm-up's last calls ended, when `settle`), then CPU."""
        urls = self.target.metrics_urls
        if urls:
            self.before = metrics.settle(urls) if settle else metrics.scrape(urls)
        if self.target.pid:
            self.cpu = -procstat.cpu_seconds(self.target.pid)
        self.machine = -procstat.machine_busy_seconds()

    def end(self, settle: bool = False) -> None:
        """Reads CPU, then the counters (once the run's last calls ended, when `settle`)."""
        self.machine += procstat.machine_busy_seconds()
        if self.target.pid:
            self.cpu += procstat.cpu_seconds(self.target.pid)
        urls = self.target.metrics_urls
        if urls and self.before is not None:
            after = metrics.settle(urls) if settle else metrics.scrape(urls)
            if after is not None:
                self.codes = metrics.handled_delta(self.before, after, self.methods)


def choose(workload: Workload, wanted: str) -> str:
    """ "h2load" or "python" for `workload`, given the --generator choice."""
    if workload.stream or not workload.uniform or wanted == "python":
        return "python"
    if h2load.path() is None:
        if wanted == "h2load":
            raise SystemExit(f"bench: {h2load.MISSING}")
        return "python"
    return "h2load"


def measure(target: Target, workload: Workload, wanted: str, workdir: Path) -> LoadResult:
    """Runs `workload` against `target`; the result carries server CPU and honest status codes."""
    window = _Window(target, workload)
    if choose(workload, wanted) == "h2load":
        probed = asyncio.run(pyclient.probe(target.address, workload.calls))
        start, end = (lambda: window.start(settle=True)), (lambda: window.end(settle=True))
        result = h2load.run(target.address, workload, workdir, start, end)
        _attach_codes(result, window, workload, probed)
    else:
        result = _python(target, workload, window, workdir)
        counted = sum((window.codes or {}).values())
        if window.codes is not None and not workload.stream and counted < result.count / 2:
            result.notes.append(f"server metrics counted far fewer calls: {window.codes}")
    result.server_cpu_s, result.machine_cpu_s = window.cpu, window.machine
    return result


def _attach_codes(
    result: LoadResult, window: _Window, workload: Workload, probed: dict[str, int]
) -> None:
    bad_probe = {k: v for k, v in probed.items() if k != "OK"}
    if bad_probe:
        result.notes.append(
            f"checking client probe of the {len(workload.calls)} requests: {probed}"
        )
    if window.codes is None:
        result.status_codes = {"OK (unverified)": result.count - sum(result.errors.values())}
        result.notes.append(f"probe of each distinct request with the Python client: {probed}")
        return
    result.status_codes, result.status_source = window.codes, "metrics"
    counted = sum(window.codes.values())
    if abs(counted - result.count) > 2 * workload.concurrency:
        result.notes.append(
            f"server counted {counted} calls, h2load logged {result.count}: "
            "the metrics may not cover every worker process"
        )
    cut = window.codes.get("Canceled", 0)
    if 0 < cut <= workload.concurrency:
        result.notes.append(
            f"Canceled {cut}: calls in flight when h2load stopped at the end of its duration "
            "(it resets open streams); not counted as errors"
        )
    for code, n in window.codes.items():
        if code != "OK" and not (code == "Canceled" and n <= workload.concurrency):
            result.errors[f"server metrics: grpc_code={code}"] = n


def _python(target: Target, workload: Workload, window: _Window, workdir: Path) -> LoadResult:
    """Runs bench.pyclient in a subprocess; its stdout marks the measured window."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec = Path(tempfile.mkstemp(suffix=".json", dir=workdir)[1])
    out = spec.with_suffix(".result.json")
    spec.write_text(workload.to_json())
    argv = [sys.executable, "-m", "bench.pyclient", "--target", target.address]
    argv += ["--workload", str(spec), "--out", str(out)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == "measuring":
                window.start()
            elif line.strip() == "done":
                window.end()
    if proc.returncode != 0:
        raise RuntimeError(f"the Python client failed ({proc.returncode})")
    return LoadResult.load(out)
