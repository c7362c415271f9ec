"""The calls' series (service.metrics) expose exactly what prometheus_client's own Counter and
Histogram expose for the same calls: families, samples, labels, buckets, order, `_created`.

The service counts calls in plain numbers and builds the metric families when scraped; this
compares its exposition with the reference, prometheus_client's metric classes, fed the same
calls in a registry of their own. (tests/test_observability.py scrapes a real server.)
"""

from __future__ import annotations

import os
import re

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from service import metrics

_LABELS = ("grpc_type", "grpc_service", "grpc_method")
_CREATED = re.compile(r"^(\S+_created\{.*\}) \S+$")

# (method, StatusCode or a raw code a handler set, seconds): bucket bounds included, past the
# last bound, and codes interleaved across methods (the order series first occur in).
CALLS: list[tuple[str, object, float]] = [
    ("GetUser", grpc.StatusCode.OK, 0.0004),
    ("ListUsers", grpc.StatusCode.OK, 0.005),
    ("GetUser", grpc.StatusCode.NOT_FOUND, 0.0005),
    ("GetUser", grpc.StatusCode.OK, 10.0),
    ("ListUsers", grpc.StatusCode.CANCELLED, 11.5),
    ("GetUser", 7, 0.026),
]


def _reference(registry: CollectorRegistry) -> tuple[Counter, Counter, Histogram]:
    started = Counter(
        "grpc_server_started_total", "RPCs started on the server.", _LABELS, registry=registry
    )
    handled = Counter(
        "grpc_server_handled_total",
        "RPCs completed on the server, by code.",
        (*_LABELS, "grpc_code"),
        registry=registry,
    )
    seconds = Histogram(
        "grpc_server_handling_seconds",
        "Response latency of RPCs handled by the server.",
        _LABELS,
        buckets=metrics.BUCKETS,
        registry=registry,
    )
    return started, handled, seconds


def _go_name(code: object) -> str:
    if not isinstance(code, grpc.StatusCode):
        return str(code)
    special = {grpc.StatusCode.OK: "OK", grpc.StatusCode.CANCELLED: "Canceled"}
    return special.get(code) or "".join(part.title() for part in code.name.split("_"))


def _ours(text: str, service: str) -> list[str]:
    """The lines of the three families: their HELP and TYPE, and the samples of `service`."""
    families = ("grpc_server_started", "grpc_server_handled", "grpc_server_handling_seconds")
    kept = []
    for line in text.splitlines():
        if line.startswith("#"):
            if line.split()[2].startswith(families):
                kept.append(line)
        elif f'grpc_service="{service}"' in line:
            kept.append(_CREATED.sub(r"\1 (created)", line))  # a time: equal only in form
    return kept


def test_exposition_is_prometheus_clients_for_the_same_calls() -> None:
    service = f"test.Metrics{os.getpid()}"  # series of this test only, in the process's registry
    registry = CollectorRegistry()
    started, handled, seconds = _reference(registry)
    for method, code, elapsed in CALLS:
        labels = ("unary", service, method)
        ours = metrics.method_metrics(*labels)
        ours.started += 1
        started.labels(*labels).inc()
        name = code.name if isinstance(code, grpc.StatusCode) else str(code)
        ours.finished(name, elapsed)
        handled.labels(*labels, _go_name(code)).inc()
        seconds.labels(*labels).observe(elapsed)

    expected = _ours(generate_latest(registry).decode(), service)
    exposed = _ours(generate_latest().decode(), service)
    assert any("_bucket" in line for line in expected)
    assert exposed == expected
