"""Prometheus metrics, named as go-grpc-prometheus names them, plus the pools' gauges.

The calls' series (started, handled by code, handling seconds) are plain numbers of ours,
counted on the event loop and turned into prometheus_client's metric families only when
scraped (`CallsCollector`): prometheus_client's Counter and Histogram cost a call about a
dozen Python calls and three locks, for counts only one thread (the loop) ever changes. The
exposition is the one prometheus_client's Counter and Histogram give (tests/test_metrics.py
compares the two): the same families, samples, labels, buckets and `_created` series.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator

import grpc
from prometheus_client import REGISTRY, Gauge, start_http_server
from prometheus_client import metrics as client_metrics
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import INF, floatToGoString

from service.db.engine import Database

_LABELS = ("grpc_type", "grpc_service", "grpc_method")
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, INF)
_LE = tuple(floatToGoString(bound) for bound in BUCKETS)  # type: ignore[no-untyped-call]

# Codes as go-grpc-prometheus labels them (Go's codes.Code.String()): NotFound, Canceled, ...,
# by the code's name (a str key: hashing a StatusCode is a Python call, Enum.__hash__).
_GO_NAMES = {
    code.name: "".join(part.title() for part in code.name.split("_")) for code in grpc.StatusCode
} | {"OK": "OK", "CANCELLED": "Canceled"}


class MethodMetrics:
    """One method's series. `started` is counted by the caller (`+= 1`: no call at all);
    `finished` counts the rest. One per method and process (`method_metrics`), as a labelled
    prometheus_client series is."""

    __slots__ = ("buckets", "created", "handled", "labels", "seconds", "started")

    def __init__(self, labels: tuple[str, str, str]) -> None:
        self.labels = labels
        self.created = time.time()
        self.started = 0
        self.handled: dict[str, list[float]] = {}  # Go code name: [count, created]
        self.buckets = [0] * len(BUCKETS)  # calls per bucket, not cumulative
        self.seconds = 0.0

    def finished(self, code_name: str, seconds: float) -> None:
        """A call ended with the code named `code_name` (a StatusCode's name, or the raw value
        a handler set, as text) after `seconds`."""
        label = _GO_NAMES.get(code_name, code_name)
        counted = self.handled.get(label)
        if counted is None:
            counted = self.handled[label] = _handled[(*self.labels, label)] = [0, time.time()]
        counted[0] += 1
        self.buckets[bisect_left(BUCKETS, seconds)] += 1  # the first bound >= seconds
        self.seconds += seconds


_methods: dict[tuple[str, str, str], MethodMetrics] = {}
# Every method's handled counts in the order they first occurred, as prometheus_client lists a
# labelled counter's series: (type, service, method, code) -> [count, created].
_handled: dict[tuple[str, str, str, str], list[float]] = {}


def method_metrics(kind: str, service: str, name: str) -> MethodMetrics:
    """The series of one method (made on first use, then shared: the process has one set)."""
    labels = (kind, service, name)
    found = _methods.get(labels)
    if found is None:
        found = _methods[labels] = MethodMetrics(labels)
    return found


class CallsCollector:
    """The calls' series as prometheus_client's Counter and Histogram expose them."""

    def describe(self) -> Iterable[Metric]:
        return [
            Metric("grpc_server_started", "RPCs started on the server.", "counter"),
            Metric("grpc_server_handled", "RPCs completed on the server, by code.", "counter"),
            Metric(
                "grpc_server_handling_seconds",
                "Response latency of RPCs handled by the server.",
                "histogram",
            ),
        ]

    def collect(self) -> Iterator[Metric]:
        created = client_metrics._use_created  # PROMETHEUS_DISABLE_CREATED_SERIES, as theirs
        started, handled, seconds = self.describe()
        methods = list(_methods.values())  # snapshots: the loop's thread goes on counting
        for series in methods:
            labels = dict(zip(_LABELS, series.labels, strict=True))
            started.add_sample("grpc_server_started_total", labels, series.started)
            if created:
                started.add_sample("grpc_server_started_created", labels, series.created)
        for key, (count, since) in list(_handled.items()):
            coded = dict(zip((*_LABELS, "grpc_code"), key, strict=True))
            handled.add_sample("grpc_server_handled_total", coded, count)
            if created:
                handled.add_sample("grpc_server_handled_created", coded, since)
        for series in methods:
            labels = dict(zip(_LABELS, series.labels, strict=True))
            total = 0.0
            for le, count in zip(_LE, list(series.buckets), strict=True):
                total += count
                seconds.add_sample(
                    "grpc_server_handling_seconds_bucket", {**labels, "le": le}, total
                )
            seconds.add_sample("grpc_server_handling_seconds_count", labels, total)
            seconds.add_sample("grpc_server_handling_seconds_sum", labels, series.seconds)
            if created:
                seconds.add_sample("grpc_server_handling_seconds_created", labels, series.created)
        yield started
        yield handled
        yield seconds


REGISTRY.register(CallsCollector())


pool_checked_out = Gauge("db_pool_checked_out", "Connections in use.", ("pool",))
pool_idle = Gauge("db_pool_idle", "Connections idle in the pool.", ("pool",))
pool_size = Gauge("db_pool_size", "Configured pool size.", ("pool",))


def watch_pools(database: Database) -> None:
    """Gauges read the pools when scraped, so they cost nothing between scrapes."""
    for name, engine in (("writer", database.writer), ("reader", database.reader)):
        pool = engine.pool
        pool_checked_out.labels(name).set_function(lambda p=pool: float(p.checkedout()))  # type: ignore[misc]
        pool_idle.labels(name).set_function(lambda p=pool: float(p.checkedin()))  # type: ignore[misc]
        pool_size.labels(name).set_function(lambda p=pool: float(p.size()))  # type: ignore[misc]


def serve(port: int, host: str) -> None:
    start_http_server(port, addr=host)
