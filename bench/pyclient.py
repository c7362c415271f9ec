"""The checking Python client: grpc.aio on uvloop, C concurrent workers, real gRPC status codes.

It sends the same serialized payloads as h2load through generic (non-decoding) stubs, so its own
cost per call stays small, over `connections` separate HTTP/2 connections (a local subchannel
pool per channel) so that several server workers on one SO_REUSEPORT port all get traffic.
It runs what h2load cannot: weighted mixes, server streams, and it counts status codes itself.

    python -m bench.pyclient --target 127.0.0.1:50051 --workload w.json --out result.json
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from bench import model
from bench.model import Call, LoadResult, Workload

TIMEOUT_S = 20.0  # per unary call, like ghz's default
_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


def code_name(code: grpc.StatusCode) -> str:
    """A status code spelled as ghz and go-grpc-prometheus spell it ("OK", "NotFound")."""
    return model.code_name(code.name)


def error_text(error: grpc.aio.AioRpcError) -> str:
    """An error line as ghz prints it."""
    return f"rpc error: code = {code_name(error.code())} desc = {(error.details() or '')[:200]}"


def reason(metadata: Iterable[Any] | None) -> str:
    """The ErrorInfo reason a failed call's trailing metadata carries ("" if it has none).

    `metadata` is (key, value) pairs: aio.Metadata, or what AioRpcError.trailing_metadata()
    returns (grpc-stubs types it otherwise)."""
    for key, value in metadata or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            for detail in status_pb2.Status.FromString(value).details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    return str(info.reason)
    return ""


def channels(target: str, count: int) -> list[grpc.aio.Channel]:
    """`count` channels to `target`, each on its own connection."""
    return [grpc.aio.insecure_channel(target, options=_OPTIONS) for _ in range(max(1, count))]


def _mark(event: str) -> None:
    """Tells the parent process (reading stdout) that the measured window starts or ends."""
    print(event, flush=True)


def _schedule(calls: Sequence[Call], size: int = 10_000) -> list[Call]:
    """A shuffled list in which each call appears in proportion to its weight."""
    total = sum(c.weight for c in calls)
    order = [c for c in calls for _ in range(max(1, round(size * c.weight / total)))]
    random.Random(7).shuffle(order)
    return order


class _Tally:
    def __init__(self) -> None:
        self.latencies: list[int] = []
        self.codes: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.count = 0

    def add(self, started: int, ended: int, error: grpc.aio.AioRpcError | None) -> None:
        self.count += 1
        if error is None:
            self.codes["OK"] += 1
            self.latencies.append(ended - started)
        else:
            self.codes[code_name(error.code())] += 1
            self.errors[error_text(error)] += 1


async def run_unary(target: str, workload: Workload) -> LoadResult:
    """Runs `workload` (unary calls) for its warm-up then its duration; counts the latter."""
    chans = channels(target, min(workload.connections, workload.concurrency))
    stubs: dict[tuple[int, str], Callable[..., Any]] = {
        (i, c.method): ch.unary_unary(c.method, None, None)
        for i, ch in enumerate(chans)
        for c in workload.calls
    }
    order = _schedule(workload.calls)
    tally = _Tally()
    for ch in chans:
        await ch.channel_ready()
    now = time.perf_counter_ns
    start = now() + int(workload.warmup_s * 1e9)
    end = start + int(workload.duration_s * 1e9)

    async def worker(index: int) -> None:
        channel = index % len(chans)
        for call in itertools.islice(itertools.cycle(order), index * 37 % len(order), None):
            began = now()
            if began >= end:
                return
            error = None
            try:
                await stubs[(channel, call.method)](call.payload, timeout=TIMEOUT_S)
            except grpc.aio.AioRpcError as exc:
                error = exc
            ended = now()
            if start <= ended < end:
                tally.add(began, ended, error)

    async def cpu_meter() -> float:
        await asyncio.sleep((start - now()) / 1e9)
        before = time.process_time()
        _mark("measuring")
        await asyncio.sleep((end - now()) / 1e9)
        _mark("done")
        return time.process_time() - before

    meter = asyncio.create_task(cpu_meter())
    await asyncio.gather(*(worker(i) for i in range(workload.concurrency)))
    cpu = await meter
    for ch in chans:
        await ch.close(None)
    return LoadResult(
        generator="python",
        count=tally.count,
        total_ns=end - start,
        latencies_ns=tally.latencies,
        status_codes=dict(tally.codes),
        errors=dict(tally.errors),
        client_cpu_s=cpu,
    )


async def run_stream(target: str, workload: Workload) -> LoadResult:
    """Opens `concurrency` streams of the first call and drains them (or stops at the limit)."""
    chans = channels(target, workload.concurrency)
    tally = _Tally()
    messages = 0
    received = 0

    async def drain(channel: grpc.aio.Channel) -> None:
        nonlocal messages, received
        call = workload.calls[0]
        stream = channel.unary_stream(call.method, None, None)(call.payload, timeout=3600)
        began, error = time.perf_counter_ns(), None
        try:
            async for message in stream:
                messages += 1
                received += len(message)
                if workload.stream_limit and messages >= workload.stream_limit:
                    stream.cancel()
                    break
        except grpc.aio.AioRpcError as exc:
            error = exc
        tally.add(began, time.perf_counter_ns(), error)

    for ch in chans:
        await ch.channel_ready()
    _mark("measuring")
    cpu_before, began = time.process_time(), time.perf_counter_ns()
    await asyncio.gather(*(drain(ch) for ch in chans))
    total, cpu = time.perf_counter_ns() - began, time.process_time() - cpu_before
    _mark("done")
    for ch in chans:
        await ch.close(None)
    return LoadResult(
        generator="python",
        count=tally.count,
        total_ns=total,
        latencies_ns=tally.latencies,
        status_codes=dict(tally.codes),
        errors=dict(tally.errors),
        client_cpu_s=cpu,
        extra={"messages": float(messages), "bytes": float(received)},
    )


async def probe(target: str, calls: Sequence[Call]) -> dict[str, int]:
    """Sends each call once; the status codes seen (to check what h2load is about to send)."""
    codes: Counter[str] = Counter()
    async with grpc.aio.insecure_channel(target, options=_OPTIONS) as channel:
        for call in calls:
            try:
                await channel.unary_unary(call.method, None, None)(call.payload, timeout=TIMEOUT_S)
                codes["OK"] += 1
            except grpc.aio.AioRpcError as exc:
                codes[error_text(exc)] += 1
    return dict(codes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pyclient", description=__doc__)
    parser.add_argument("--target", required=True)
    parser.add_argument("--workload", type=Path, required=True, help="Workload JSON")
    parser.add_argument("--out", type=Path, required=True, help="where to write the LoadResult")
    args = parser.parse_args(argv)
    import uvloop

    workload = Workload.from_json(args.workload.read_text())
    runner = run_stream if workload.stream else run_unary
    uvloop.run(runner(args.target, workload)).save(args.out)


if __name__ == "__main__":
    main()
