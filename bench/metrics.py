"""Reads the server's Prometheus text endpoint: gRPC status codes handled, and pool gauges.

h2load sees HTTP statuses only, so the gRPC status code distribution of an h2load run is the
difference of `grpc_server_handled_total` (go-grpc-prometheus names and labels) read before and
after it, for the methods the run called. With GRPC_WORKERS=N each worker serves its own
endpoint (METRICS_PORT + index): all of them are read and summed.
"""

from __future__ import annotations

import time
import urllib.request
from collections import Counter
from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families

from bench.model import code_name

Samples = list[tuple[str, dict[str, str], float]]


def parse(text: str) -> Samples:
    """(name, labels, value) of every sample in a Prometheus text exposition (ValueError if the
    text is not one)."""
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def scrape(urls: Iterable[str], timeout: float = 5.0) -> Samples | None:
    """The samples of every URL together (one per worker process), or None if one cannot be read."""
    samples: Samples = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                samples += parse(response.read().decode())
        except (OSError, ValueError):
            return None
    return samples


def handled(samples: Samples, methods: Iterable[tuple[str, str]]) -> Counter[str]:
    """Calls handled by gRPC code, summed over `methods` ((service, method) pairs)."""
    wanted = set(methods)
    codes: Counter[str] = Counter()
    for name, labels, value in samples:
        key = (labels.get("grpc_service", ""), labels.get("grpc_method", ""))
        if name == "grpc_server_handled_total" and key in wanted:
            codes[code_name(labels.get("grpc_code", "?"))] += int(value)
    return codes


def handled_delta(
    before: Samples, after: Samples, methods: Iterable[tuple[str, str]]
) -> dict[str, int]:
    """The calls handled between two scrapes, by gRPC code (codes that did not change omitted)."""
    pairs = list(methods)
    delta = handled(after, pairs)
    delta.subtract(handled(before, pairs))
    return {code: n for code, n in delta.items() if n}


def settle(urls: Iterable[str], timeout: float = 5.0) -> Samples | None:
    """A scrape once the handled-call counters stop moving (calls in flight have ended)."""
    pairs = list(urls)
    last = scrape(pairs)
    deadline = time.monotonic() + timeout
    while last is not None and time.monotonic() < deadline:
        time.sleep(0.25)
        now = scrape(pairs)
        if now is None or _handled_total(now) == _handled_total(last):
            return now
        last = now
    return last


def _handled_total(samples: Samples) -> float:
    return sum(v for name, _, v in samples if name == "grpc_server_handled_total")


def pool_gauges(samples: Samples) -> dict[str, float]:
    """Every `db_pool_*` sample (db_pool_checked_out{pool="writer"}...), summed over workers."""
    gauges: dict[str, float] = {}
    for name, labels, value in samples:
        if name.startswith("db_pool_"):
            key = name + "".join(f"{{{k}={v}}}" for k, v in sorted(labels.items()))
            gauges[key] = gauges.get(key, 0.0) + value
    return gauges
