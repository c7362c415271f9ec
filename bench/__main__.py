"""`make bench`: one benchmark run of the service against a bare gRPC server, ghz-style.

Seeds (or reuses) 100k users / 500k posts, starts the service and a bare grpc.aio server with
the same event loop and worker count, runs every scenario against both with the same load
generator (h2load when installed, else the Python client), prints ghz's summary per scenario
with its ratio to bare, writes ghz JSON to bench/results/<timestamp>/, and ends with a table
and the issue's targets as MET / MISSED.

    python -m bench [--quick] [--target 127.0.0.1:50051 --metrics-url URL --pid PID]
                    [--only GetUser,ListPosts] [--generator auto|h2load|python] [--otlp]

Tracing on: `--otlp` starts an OTLP/gRPC receiver (tests/support/otlp.py, counting spans only) and points
the service's OTEL_EXPORTER_OTLP_ENDPOINT at it; the sampler is whatever OTEL_TRACES_SAMPLER and
OTEL_TRACES_SAMPLER_ARG say in the environment, e.g.
    OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.01 \
        make bench BENCH_ARGS="--only =GetUser --otlp"
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from bench import balance, h2load, hashing, procstat, report, runner, scenarios, targets
from bench.model import LoadResult, Workload
from bench.report import Outcome
from bench.runner import Target
from bench.scenarios import Scenario
from bench.servers import ROOT
from bench.session import Log, Session

if TYPE_CHECKING:
    from tests.support.otlp import Receiver

WORKERS_SCENARIO = "GetUser GRPC_WORKERS=2"
CLIENTS_SCENARIO = "GetUser (Python client)"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--target", help="load this running server instead of starting the service")
    p.add_argument(
        "--metrics-url",
        action="append",
        default=[],
        help="with --target: its /metrics URL (gRPC status codes); once per worker",
    )
    p.add_argument("--pid", type=int, help="with --target: its pid (CPU, RSS)")
    p.add_argument("--workers", type=int, default=int(os.environ.get("GRPC_WORKERS", "1")))
    p.add_argument("--concurrency", type=int, default=64, help="calls in flight (64)")
    p.add_argument("--connections", type=int, default=16, help="HTTP/2 connections (16)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per run (10)")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per run (2)")
    p.add_argument("--quick", action="store_true", help="3 s runs, 100k-row stream: a smoke run")
    p.add_argument("--generator", choices=["auto", "h2load", "python"], default="auto")
    p.add_argument("--bare-loop", choices=["auto", "uvloop", "asyncio"], default="auto")
    p.add_argument(
        "--only",
        help="comma-separated scenario names (case-insensitive prefixes; =Name: that one only)",
    )
    p.add_argument("--otlp", action="store_true", help="trace, exporting to a receiver of ours")
    p.add_argument("--no-seed", action="store_true", help="with --target: do not seed")
    p.add_argument("--service-module", default="service", help="python -m <this> is the service")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 3.0, 1.0
    return args


def _wanted(name: str, only: str | None) -> bool:
    if not only:
        return True
    for wanted in (o.strip().lower() for o in only.split(",")):
        exact = wanted.startswith("=")
        if name.lower() == wanted[1:] if exact else name.lower().startswith(wanted):
            return True
    return False


def _measure(target: Target, sc: Scenario, generator: str, workdir: Path) -> LoadResult:
    sampler = procstat.RssSampler(target.pid) if sc.kind == "stream" and target.pid else None
    if sampler:
        sampler.start()
    result = runner.measure(target, sc.workload, generator, workdir)
    if sampler:
        sampler.stop()
        rss = {"rss_before": sampler.first, "rss_peak": sampler.peak, "rss_after": sampler.last}
        result.extra.update({k: float(v) for k, v in rss.items()})
        result.extra["rss_growth"] = float(sampler.peak - sampler.first)
        mb = {k: f"{v / 2**20:.1f} MB" for k, v in rss.items()}
        secs = result.total_ns / 1e9 or 1
        result.notes.append(
            f"{result.extra['messages']:.0f} posts in {secs:.1f} s = "
            f"{result.extra['messages'] / secs:.0f} posts/s, "
            f"{result.extra['bytes'] / secs / 2**20:.1f} MB/s; server RSS {mb}"
        )
    return result


def _run_scenario(
    s: Session, sc: Scenario, args: argparse.Namespace, bare_runs: dict[str, LoadResult], log: Log
) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="bench-") as work:
        before = balance.calls_per_worker(s.service.metrics_urls, _methods(sc))
        result, pg_cores = balance.postgres_cores(
            lambda: _measure(s.service, sc, args.generator, Path(work) / "service")
        )
        after = balance.calls_per_worker(s.service.metrics_urls, _methods(sc))
        if sc.kind == "auth":  # the same run's raw hashing, not a bare server, is its baseline
            bare = hashing.measure(sc.workload.duration_s)
        else:
            key = f"{sc.shape}/{result.generator}"
            if key not in bare_runs:
                bare_runs[key] = _measure(s.bare, sc, result.generator, Path(work) / "bare")
            bare = bare_runs[key]
    outcome = Outcome(sc.name, sc.kind, result, bare)
    if sc.kind == "auth":
        outcome.notes.append(
            f"bounded by Argon2 by design: the ratio is successful logins/s to raw Argon2id "
            f"verifications/s ({bare.generator}, same cost settings, this run); "
            f"{sc.workload.concurrency} in flight = the service's hashing capacity"
        )
    if len(after) > 1:
        split = [a - b for a, b in zip(after, before, strict=True)]
        shares = " / ".join(f"{100 * n / (sum(split) or 1):.0f} %" for n in split)
        outcome.notes.append(f"calls per worker (warm-up included): {shares}")
    outcome.notes.append(f"PostgreSQL kept {pg_cores:.2f} cores busy during the service's run")
    log(report.summary(outcome))
    log()
    report.write(s.out, outcome)
    return outcome


def _methods(sc: Scenario) -> set[tuple[str, str]]:
    return {(c.service, c.name) for c in sc.workload.calls}


def _bare_uvloop(s: Session, choice: str, log: Log) -> bool:
    if choice != "auto":
        return choice == "uvloop"
    seen = s.service_uses_uvloop()
    if seen is None:
        log("bare server: service pid unknown (give --pid), assuming it runs uvloop")
        return True
    return seen


def _workers_run(
    s: Session, sc: Scenario, args: argparse.Namespace, uvloop: bool, log: Log
) -> Outcome | None:
    if not s.owns_service or args.workers != 1:
        log(f"{WORKERS_SCENARIO}: skipped (needs a service this run starts with 1 worker)")
        return None
    s.start_service(2)
    s.start_bare(uvloop, 2)
    two = Scenario(replace(sc.workload, name=WORKERS_SCENARIO), "workers", "GetUser/2")
    return _run_scenario(s, two, args, {}, log)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    out = ROOT / "bench" / "results" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / "output.txt")
    if args.generator != "python" and h2load.path() is None:
        log(f"bench: {h2load.MISSING}")
    session = Session(
        out, log, args.target, args.metrics_url, args.pid, not args.no_seed, args.service_module
    )
    with contextlib.ExitStack() as stack:
        if args.otlp:
            receiver = _otlp_receiver(stack, log)
        try:
            _main(session, args, log)
        finally:
            session.close()
        if args.otlp:
            log(f"OTLP receiver: {receiver.received} spans in {receiver.requests} exports")
    log(f"results: {out.relative_to(ROOT)}")


def _main(s: Session, args: argparse.Namespace, log: Log) -> None:
    s.start_service(args.workers)
    uvloop = _bare_uvloop(s, args.bare_loop, log)
    s.start_bare(uvloop, args.workers)
    token = ""
    if _wanted("ListPosts deep page", args.only):
        began = time.monotonic()
        token = _deep(s.service.address, log)
        log(f"deep page token: walked 100 pages of 1000 posts in {time.monotonic() - began:.1f} s")
    base = Workload("", (), args.concurrency, args.duration, args.warmup, args.connections)
    limit = 100_000 if args.quick else 0
    outcomes: dict[str, Outcome] = {}
    bare_runs: dict[str, LoadResult] = {}
    built = scenarios.build(s.data, base, token, limit, hashing.capacity())
    for sc in built:
        if _wanted(sc.name, args.only) and (token or not sc.name.startswith("ListPosts deep")):
            _attempt(
                outcomes, s, log, functools.partial(_run_scenario, s, sc, args, bare_runs, log)
            )
    first = built[0]
    if (
        _wanted(CLIENTS_SCENARIO, args.only)
        and runner.choose(first.workload, args.generator) == "h2load"
    ):
        check = Scenario(replace(first.workload, name=CLIENTS_SCENARIO), "check", "GetUser")
        args_py = argparse.Namespace(**{**vars(args), "generator": "python"})
        _attempt(outcomes, s, log, lambda: _run_scenario(s, check, args_py, bare_runs, log))
    if _wanted(WORKERS_SCENARIO, args.only):
        _attempt(outcomes, s, log, lambda: _workers_run(s, first, args, uvloop, log))
    log(targets.table(outcomes))
    log()
    log("Targets (ratios to the bare server in this run):")
    log(targets.verdicts(outcomes))
    verdicts = [{"target": t, "measured": m, "met": ok} for t, m, ok in targets.judge(outcomes)]
    (s.out / "targets.json").write_text(json.dumps(verdicts, indent=2))


def _otlp_receiver(stack: contextlib.ExitStack, log: Log) -> Receiver:
    """An OTLP receiver for the run, and the service's environment pointed at it."""
    from tests.support.otlp import OtlpServer

    otlp = stack.enter_context(OtlpServer(keep=False))
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp.endpoint
    sampler = os.environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on")
    log(f"tracing on: {sampler} {os.environ.get('OTEL_TRACES_SAMPLER_ARG', '')} to {otlp.endpoint}")
    return otlp.receiver


def _attempt(
    outcomes: dict[str, Outcome], s: Session, log: Log, run: Callable[[], Outcome | None]
) -> None:
    """Runs one scenario into `outcomes`; a failure is reported and the run goes on."""
    try:
        outcome = run()
    except Exception as exc:
        log(f"scenario failed: {exc!r}")
        if s.service_server is not None and s.service_server.proc.poll() is not None:
            raise SystemExit(f"bench: the service exited; see {s.service_server.log}") from exc
        return
    if outcome is not None:
        outcomes[outcome.name] = outcome


def _deep(address: str, log: Log) -> str:
    from bench.dataset import deep_token

    try:
        return deep_token(address)
    except Exception as exc:
        log(f"ListPosts deep page: skipped, could not walk to row 100,000: {exc!r}")
        return ""


if __name__ == "__main__":
    main()
