"""The soak's clients: the loop that sends their unary calls, and the tally of what came back.

Both the well-behaved clients (`bench.soak`) and the hostile one (`bench.hostile`) send calls
through `repeat` and count them in a `Tally`, so their figures are counted the same way.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Iterable

import grpc

from bench import pyclient
from bench.model import Call

TIMEOUT_S = 10.0  # per unary call


class Tally:
    """Outcomes and latencies by name (a method, or what the hostile client did).

    With `reasons`, a failure is counted under its code and its ErrorInfo reason
    ("ResourceExhausted STREAMS_EXHAUSTED"), which tells apart the limits that refused it.
    """

    def __init__(self, reasons: bool = False) -> None:
        self.reasons = reasons
        self.codes: dict[str, Counter[str]] = defaultdict(Counter)
        self.latencies: dict[str, list[int]] = defaultdict(list)
        self.first_error: dict[str, str] = {}

    def count(self, name: str, nanos: int, code: str, example: str = "") -> None:
        self.codes[name][code] += 1
        self.latencies[name].append(nanos)
        if code != "OK":
            self.first_error.setdefault(code, f"{name}: {example}")

    def add(self, name: str, nanos: int, error: grpc.aio.AioRpcError | None) -> None:
        if error is None:
            self.count(name, nanos, "OK")
            return
        code = pyclient.code_name(error.code())
        reason = pyclient.reason(error.trailing_metadata()) if self.reasons else ""
        self.count(name, nanos, f"{code} {reason}".strip(), pyclient.error_text(error))

    def errors(self) -> Counter[str]:
        """Failed calls by code, over every name."""
        out: Counter[str] = Counter()
        for codes in self.codes.values():
            out.update({code: n for code, n in codes.items() if code != "OK"})
        return out

    def total(self) -> int:
        return sum(sum(codes.values()) for codes in self.codes.values())

    def all_latencies(self) -> list[int]:
        return [ns for values in self.latencies.values() for ns in values]


def ms(values: list[int], pct: float) -> float:
    """The `pct` quantile of `values` (nanoseconds), in milliseconds."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct))] / 1e6 if ordered else 0.0


async def repeat(
    channel: grpc.aio.Channel,
    calls: Iterable[Call],
    end: float,
    tally: Tally,
    *,
    suffix: str = "",
    backoff: float = 0.0,
) -> None:
    """Sends `calls` one after another until `end` (time.monotonic()), each counted in `tally`
    under its method name plus `suffix`. A call refused RESOURCE_EXHAUSTED is followed by a
    pause of `backoff` seconds."""
    for call in calls:
        if time.monotonic() >= end:
            return
        began, error = time.perf_counter_ns(), None
        try:
            await channel.unary_unary(call.method, None, None)(call.payload, timeout=TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            error = exc
        tally.add(call.name + suffix, time.perf_counter_ns() - began, error)
        if backoff and error is not None and error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
            await asyncio.sleep(backoff)
