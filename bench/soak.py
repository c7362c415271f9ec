"""`make soak`: 200 concurrent Python clients doing mixed reads and writes for a bounded time.

Against a running server (`make run`): prints calls and latency per method, errors by status
code, and, given `--metrics` (once per worker) and `--pid`, the database pool gauges and the
server's RSS at start, peak and end. It stops by itself after `--seconds` (plus at most the
call timeout), and exits 1 when a call failed with a code that signals a fault (INTERNAL,
UNAVAILABLE, DEADLINE_EXCEEDED, UNKNOWN, RESOURCE_EXHAUSTED).

    python -m bench.soak [--target 127.0.0.1:50051] [--seconds 60] [--clients 200]
                         [--metrics http://127.0.0.1:9464/metrics] [--pid PID]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import sys
import time
from collections import Counter, defaultdict

import blog.v1.post_service_pb2 as post_pb
import blog.v1.user_service_pb2 as user_pb
import grpc

from bench import dataset, metrics, procstat, pyclient, scenarios
from bench.model import Call

FAULTS = {"Internal", "Unavailable", "DeadlineExceeded", "Unknown", "ResourceExhausted"}
TIMEOUT_S = 10.0
_MB = 1024 * 1024


def _mix(target: str) -> list[Call]:
    """The soak's calls, weighted: mostly reads, a fifth writes, a few registrations."""
    data = dataset.from_api(target)
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


class Tally:
    """Per-method outcomes and latencies."""

    def __init__(self) -> None:
        self.codes: dict[str, Counter[str]] = defaultdict(Counter)
        self.latencies: dict[str, list[int]] = defaultdict(list)
        self.first_error: dict[str, str] = {}
        self.pool_peak: dict[str, float] = {}

    def add(self, method: str, nanos: int, error: grpc.aio.AioRpcError | None) -> None:
        name = method.rsplit("/", 1)[1]
        code = "OK" if error is None else pyclient.code_name(error.code())
        self.codes[name][code] += 1
        self.latencies[name].append(nanos)
        if error is not None:
            self.first_error.setdefault(code, f"{name}: {pyclient.error_text(error)}")


async def _watch_pool(urls: list[str], tally: Tally) -> None:
    """Keeps the highest value of every pool gauge, read once a second."""
    while True:
        for key, value in (await asyncio.to_thread(_pool, urls) or {}).items():
            tally.pool_peak[key] = max(value, tally.pool_peak.get(key, value))
        await asyncio.sleep(1)


async def soak(target: str, seconds: float, clients: int, urls: list[str]) -> Tally:
    """`clients` workers calling `target` for `seconds`, watching the pool gauges at `urls`."""
    order = _mix(target)
    chans = pyclient.channels(target, max(1, clients // 10))
    tally, tag, serial = Tally(), f"{int(time.time())}", itertools.count()
    end = time.monotonic() + seconds

    async def client(index: int) -> None:
        channel = chans[index % len(chans)]
        for call in itertools.islice(itertools.cycle(order), index * 97 % len(order), None):
            if time.monotonic() >= end:
                return
            payload = _new_user(tag, next(serial)) if call.name == "CreateUser" else call.payload
            began, error = time.perf_counter_ns(), None
            try:
                await channel.unary_unary(call.method, None, None)(payload, timeout=TIMEOUT_S)
            except grpc.aio.AioRpcError as exc:
                error = exc
            tally.add(call.method, time.perf_counter_ns() - began, error)

    watcher = asyncio.create_task(_watch_pool(urls, tally)) if urls else None
    try:
        await asyncio.wait_for(
            asyncio.gather(*(client(i) for i in range(clients))), seconds + TIMEOUT_S + 5
        )
    finally:
        if watcher:
            watcher.cancel()
    for channel in chans:
        await channel.close(None)
    return tally


def _ms(values: list[int], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct))] / 1e6 if ordered else 0.0


def _print(tally: Tally, seconds: float) -> int:
    total = sum(sum(c.values()) for c in tally.codes.values())
    print(f"calls: {total} ({total / seconds:.0f}/s)")
    print(f"{'method':<18}{'calls':>9}{'failed':>8}{'p50 ms':>9}{'p99 ms':>9}")
    for name, codes in sorted(tally.codes.items()):
        lat = tally.latencies[name]
        failed = sum(n for code, n in codes.items() if code != "OK")
        calls = sum(codes.values())
        print(f"{name:<18}{calls:>9}{failed:>8}{_ms(lat, 0.5):>9.2f}{_ms(lat, 0.99):>9.2f}")
    errors: Counter[str] = Counter()
    for codes in tally.codes.values():
        errors.update({code: n for code, n in codes.items() if code != "OK"})
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
    args = parser.parse_args(argv)
    import uvloop

    print(f"soak: {args.clients} clients for {args.seconds:.0f} s against {args.target}")
    sampler = procstat.RssSampler(args.pid, interval=0.5) if args.pid else None
    pool_start = _pool(args.metrics)
    if sampler:
        sampler.start()
    began = time.monotonic()
    tally = uvloop.run(soak(args.target, args.seconds, args.clients, args.metrics))
    code = _print(tally, time.monotonic() - began)
    if args.metrics:
        shown = "unavailable (no db_pool_* gauges or metrics unreachable)"
        print(f"pool at start: {pool_start or shown}")
        print(f"pool peak:     {tally.pool_peak or shown}")
        print(f"pool at end:   {_pool(args.metrics) or shown}")
    if sampler:
        sampler.stop()
        first, peak, last = (v / _MB for v in (sampler.first, sampler.peak, sampler.last))
        print(f"server RSS: start {first:.1f} MB, peak {peak:.1f} MB, end {last:.1f} MB")
    sys.exit(code)


if __name__ == "__main__":
    main()
