"""Prometheus metrics, named as go-grpc-prometheus names them, plus the pools' gauges."""

from __future__ import annotations

import grpc
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from service.db.engine import Database

_LABELS = ("grpc_type", "grpc_service", "grpc_method")

started = Counter("grpc_server_started_total", "RPCs started on the server.", _LABELS)
handled = Counter(
    "grpc_server_handled_total", "RPCs completed on the server, by code.", (*_LABELS, "grpc_code")
)
handling_seconds = Histogram(
    "grpc_server_handling_seconds",
    "Response latency of RPCs handled by the server.",
    _LABELS,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


# Codes as go-grpc-prometheus labels them (Go's codes.Code.String()): NotFound, Canceled, ...
_GO_NAMES = {
    code: "".join(part.title() for part in code.name.split("_")) for code in grpc.StatusCode
} | {grpc.StatusCode.OK: "OK", grpc.StatusCode.CANCELLED: "Canceled"}


class MethodMetrics:
    """One method's series, looked up once: `labels()` takes a lock and builds a key per call."""

    def __init__(self, kind: str, service: str, name: str) -> None:
        self._labels = (kind, service, name)
        self.started = started.labels(*self._labels)
        self.handling_seconds = handling_seconds.labels(*self._labels)
        self._handled: dict[str, Counter] = {}

    def handled(self, code: object) -> Counter:
        """The handled counter for `code` (a StatusCode, or the raw value a handler set)."""
        name = _GO_NAMES[code] if isinstance(code, grpc.StatusCode) else str(code)
        series = self._handled.get(name)
        if series is None:
            series = self._handled[name] = handled.labels(*self._labels, name)
        return series


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
