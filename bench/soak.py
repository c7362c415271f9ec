"""`make soak`: 200 concurrent Python clients doing mixed reads and writes for a bounded time.

Against a running server (`make run`): prints calls and latency per method (and over all of
them), errors by status code, and, given `--metrics` (once per worker) and `--pid`, the database
pool gauges and the server's RSS at start, peak and end. It stops by itself after `--seconds`
(plus at most the call timeout), and exits 1 when a well-behaved call failed with a code that
signals a fault (INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED, UNKNOWN, RESOURCE_EXHAUSTED).

`--hostile` adds one hostile client beside them (unread streams, a login flood, oversized pages:
see bench/hostile.py), in a process of its own; its outcomes are printed apart and never change
the exit status (its RESOURCE_EXHAUSTED are the limits doing their job).

    python -m bench.soak [--target 127.0.0.1:50051] [--seconds 60] [--clients 200]
                         [--metrics http://127.0.0.1:9464/metrics] [--pid PID] [--hostile]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import random
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

import blog.v1.post_service_pb2 as post_pb
import blog.v1.user_service_pb2 as user_pb

import bench.hostile
from bench import dataset, metrics, procstat, pyclient, scenarios
from bench.hostile import Hostile
from bench.model import Call
from bench.seed import Dataset
from bench.tally import TIMEOUT_S, Tally, ms, repeat

FAULTS = {"Internal", "Unavailable", "DeadlineExceeded", "Unknown", "ResourceExhausted"}
_MB = 1024 * 1024


def _mix(data: Dataset) -> list[Call]:
    """The soak's calls, weighted: mostly reads, a fifth writes, a few registrations."""
    get_post = tuple(
        Call(scenarios.POSTS + "GetPost", post_pb.GetPostRequest(id=pid).SerializeToString())
        for pid in data.sample_posts[:64]
    )
    groups = [
        (scenarios.get_user(data, 64), 35.0),
        (scenarios.get_user_by_email(data, 64), 10.0),
        (get_post, 10.0),
        (scenarios.list_posts(), 15.0),
        (scenarios.list_users(), 9.0),
        (scenarios.create_post(data, 64), 10.0),
        (scenarios.update_post(data, 64), 10.0),
        ((Call(scenarios.USERS + "CreateUser", b""),), 1.0),
    ]
    weighted = [(c, w / len(calls)) for calls, w in groups for c in calls]
    return random.Random(3).choices([c for c, _ in weighted], [w for _, w in weighted], k=20_000)


def _new_user(tag: str, n: int) -> bytes:
    email = f"soak.{tag}.{n}@soak.example"
    request = user_pb.CreateUserRequest(email=email, username=f"soak_{tag}_{n}", password="x" * 12)
    return request.SerializeToString()


async def _watch_pool(urls: list[str], peak: dict[str, float]) -> None:
    """Keeps the highest value of every pool gauge, read once a second."""
    while True:
        for key, value in (await asyncio.to_thread(_pool, urls) or {}).items():
            peak[key] = max(value, peak.get(key, value))
        await asyncio.sleep(1)


async def soak(
    target: str,
    end: float,
    data: Dataset,
    clients: int,
    pool_peak: dict[str, float],
    urls: list[str],
) -> Tally:
    """`clients` workers calling `target` until `end` (time.monotonic()), keeping the pool
    gauges' peaks read at `urls` in `pool_peak`."""
    order = _mix(data)
    chans = pyclient.channels(target, max(1, clients // 10))
    tally, tag, serial = Tally(), f"{int(time.time())}", itertools.count()

    def calls(index: int) -> Iterator[Call]:
        for call in itertools.islice(itertools.cycle(order), index * 97 % len(order), None):
            if call.name != "CreateUser":
                yield call
            else:  # a new e-mail and username each time
                yield replace(call, payload=_new_user(tag, next(serial)))

    watcher = asyncio.create_task(_watch_pool(urls, pool_peak)) if urls else None
    try:
        clients_done = asyncio.gather(
            *(repeat(chans[i % len(chans)], calls(i), end, tally) for i in range(clients))
        )
        await asyncio.wait_for(clients_done, end - time.monotonic() + TIMEOUT_S + 5)
    finally:
        if watcher:
            watcher.cancel()
    for channel in chans:
        await channel.close(None)
    return tally


def _print(tally: Tally, seconds: float) -> int:
    """The well-behaved clients' figures; 1 if one of their calls failed with a fault code."""
    total = tally.total()
    print(f"calls: {total} ({total / seconds:.0f}/s)")
    print(f"{'method':<18}{'calls':>9}{'failed':>8}{'p50 ms':>9}{'p99 ms':>9}")
    errors = tally.errors()
    rows = [
        (name, sum(tally.codes[name].values()) - tally.codes[name]["OK"], lat)
        for name, lat in sorted(tally.latencies.items())
    ]
    for name, failed, lat in [*rows, ("all", errors.total(), tally.all_latencies())]:
        print(f"{name:<18}{len(lat):>9}{failed:>8}{ms(lat, 0.5):>9.2f}{ms(lat, 0.99):>9.2f}")
    print("errors by status code:" + ("" if errors else " none"))
    for code, n in errors.most_common():
        print(f"  [{code}] {n}  e.g. {tally.first_error[code]}")
    return 1 if FAULTS & set(errors) else 0


def _pool(urls: list[str]) -> dict[str, float] | None:
    samples = metrics.scrape(urls) if urls else None
    return None if samples is None else metrics.pool_gauges(samples)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--metrics", action="append", default=[], help="a /metrics URL")
    parser.add_argument("--pid", type=int, help="the server's pid (RSS)")
    parser.add_argument(
        "--hostile", action="store_true", help="add a hostile client (see bench/hostile.py)"
    )
    defaults = Hostile()
    parser.add_argument("--hostile-streams", type=int, default=defaults.streams)
    parser.add_argument("--hostile-logins", type=int, default=defaults.logins)
    parser.add_argument("--hostile-pages", type=int, default=defaults.pages)
    parser.add_argument("--hostile-backoff", type=float, default=defaults.backoff)
    parser.add_argument("--hostile-renew", type=float, default=defaults.renew)
    args = parser.parse_args(argv)
    import uvloop

    hostile = Hostile(
        args.hostile_streams,
        args.hostile_logins,
        args.hostile_pages,
        args.hostile_backoff,
        args.hostile_renew,
    )
    extra = f" and a hostile client {hostile}" if args.hostile else ""
    print(f"soak: {args.clients} clients for {args.seconds:.0f} s against {args.target}{extra}")
    data = dataset.from_api(args.target)
    sampler = procstat.RssSampler(args.pid, interval=0.5) if args.pid else None
    pool_start, pool_peak = _pool(args.metrics), dict[str, float]()
    # spawn, not fork: this process has already started gRPC's threads
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as worker:
        worker.submit(bench.hostile.ready).result()  # started, modules imported
        if sampler:
            sampler.start()
        began = time.monotonic()
        end = began + args.seconds
        attack = (
            worker.submit(bench.hostile.run, args.target, end, data, hostile)
            if args.hostile
            else None
        )
        tally = uvloop.run(soak(args.target, end, data, args.clients, pool_peak, args.metrics))
        hostile_tally = attack.result() if attack else None
    code = _print(tally, time.monotonic() - began)
    if hostile_tally:
        bench.hostile.report(hostile_tally)
    if args.metrics:
        shown = "unavailable (no db_pool_* gauges or metrics unreachable)"
        print(f"pool at start: {pool_start or shown}")
        print(f"pool peak:     {pool_peak or shown}")
        print(f"pool at end:   {_pool(args.metrics) or shown}")
    if sampler:
        sampler.stop()
        first, peak, last = (v / _MB for v in (sampler.first, sampler.peak, sampler.last))
        print(f"server RSS: start {first:.1f} MB, peak {peak:.1f} MB, end {last:.1f} MB")
    sys.exit(code)


if __name__ == "__main__":
    main()
