"""What tracing costs a GetUser, as server CPU per call: `python -m bench.tracing_cost`.

Starts three services on the benchmark's database: tracing off, OTEL_TRACES_SAMPLER
parentbased_traceidratio at OTEL_TRACES_SAMPLER_ARG 0.01 and at 1.0, both exporting to an OTLP
receiver (tests/support/otlp.py, counting only). Then, round after round and in a rotating order, loads
each with h2load for a few seconds and reads the CPU its process used per call (/proc). CPU per
call is far steadier than requests/s on a shared machine; rotating spreads the noise of the
other processes over all three alike. Prints each round and the medians, with their ratio to off.

    python -m bench.tracing_cost [--rounds 6] [--duration 4]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench import h2load, procstat, scenarios, seed, servers
from bench.model import Workload
from bench.servers import ROOT
from tests.support.otlp import OtlpServer

MODES = {
    "off": {},
    "1 %": {"OTEL_TRACES_SAMPLER_ARG": "0.01"},
    "100 %": {"OTEL_TRACES_SAMPLER_ARG": "1.0"},
}


def _read_cpu(pid: int, into: list[float]) -> None:
    into.append(procstat.cpu_seconds(pid))


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.tracing_cost", description=__doc__)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--duration", type=float, default=4.0, help="measured seconds per load")
    args = p.parse_args()
    db = servers.Database()
    servers.migrate(db.url)
    data = asyncio.run(seed.seed(db.url))
    calls = scenarios.get_user(data, 1000)
    workload = Workload("GetUser", calls, duration_s=args.duration, warmup_s=1.0)
    out = ROOT / "bench" / "results" / time.strftime("%Y%m%d-%H%M%S-tracing")
    out.mkdir(parents=True, exist_ok=True)
    started: dict[str, servers.Server] = {}
    with OtlpServer(keep=False) as otlp:
        try:
            for name, env in MODES.items():
                for key in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_SAMPLER"):
                    os.environ.pop(key, None)
                if env:
                    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp.endpoint
                    os.environ["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
                os.environ.update(env)
                logdir = out / name.replace(" ", "").replace("%", "pct")
                logdir.mkdir()
                started[name], _ = servers.start_service(db.url, 1, logdir, "service")
            per_call: dict[str, list[float]] = {name: [] for name in MODES}
            names = list(MODES)
            for round_ in range(args.rounds):
                order = names[round_ % 3 :] + names[: round_ % 3]
                line = []
                for name in order:
                    server = started[name]
                    cpu: list[float] = []
                    read = functools.partial(_read_cpu, server.pid, cpu)
                    with tempfile.TemporaryDirectory() as work:
                        result = h2load.run(
                            server.target, workload, Path(work), on_start=read, on_end=read
                        )
                    us = (cpu[1] - cpu[0]) / max(result.count, 1) * 1e6
                    per_call[name].append(us)
                    line.append(f"{name} {us:.0f} µs ({result.count / args.duration:.0f}/s)")
                print(f"round {round_ + 1}: " + ", ".join(line), flush=True)
        finally:
            for server in started.values():
                server.stop()
            db.stop()
    off = statistics.median(per_call["off"])
    print("\nmedian server CPU per GetUser:")
    for name, values in per_call.items():
        median = statistics.median(values)
        print(f"  {name:>6}: {median:5.0f} µs  ({median / off:.3f} of off, {median - off:+.0f} µs)")
    print(f"OTLP receiver: {otlp.receiver.received} spans; logs in {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
