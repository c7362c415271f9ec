"""ghz-style output: a summary per scenario on stdout, the same figures as ghz JSON on disk.

Percentiles, histogram and JSON keys follow ghz (runner/reporter.go): durations in nanoseconds,
`latencyDistribution` as [{percentage, latency}], percentiles over successful calls only.
Each summary adds the ratio of its requests/s to the bare server's run of the same shape, and
which load generator ran and the CPU it and the server used.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.model import LoadResult

PERCENTAGES = (10, 25, 50, 75, 90, 95, 99)
NOISE_CORES = 0.3  # busy cores outside server and client that make a bare run suspect


@dataclass
class Outcome:
    """One scenario: the service's run, the bare server's run of the same shape, what it reads."""

    name: str
    kind: str  # read | write | mix | auth | stream | workers
    result: LoadResult
    bare: LoadResult | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        if self.bare is None or not self.bare.rate:
            return None
        if self.kind == "auth":  # refused or failed logins hashed nothing
            return ok_rate(self.result) / self.bare.rate
        return self.result.rate / self.bare.rate


def ok_rate(r: LoadResult) -> float:
    """Successful calls/s (every call when no source counted status codes)."""
    secs = r.total_ns / 1e9 or 1
    ok = r.status_codes.get("OK", r.status_codes.get("OK (unverified)", r.count))
    return ok / secs


def percentiles(latencies: list[int]) -> list[tuple[int, int]]:
    """ghz's latency distribution: (percentage, latency ns), nearest rank on sorted latencies."""
    ordered = sorted(latencies)
    if not ordered:
        return []
    out = []
    for pct in PERCENTAGES:
        rank = pct / 100 * len(ordered)
        index = int(rank) - 1 if rank == int(rank) else int(rank)
        out.append((pct, ordered[max(0, index)]))
    return out


def percentile(result: LoadResult, pct: int) -> int:
    """One of PERCENTAGES, in ns (0 without successful calls)."""
    return dict(percentiles(result.latencies_ns)).get(pct, 0)


def histogram(latencies: list[int], buckets: int = 10) -> list[tuple[int, int]]:
    """ghz's histogram: (upper mark ns, count) for 11 marks from fastest to slowest."""
    if not latencies:
        return []
    fastest, slowest = min(latencies), max(latencies)
    step = (slowest - fastest) / buckets
    marks = [round(fastest + step * i) for i in range(buckets)] + [slowest]
    counts = [0] * len(marks)
    for value in latencies:
        index = 0 if step == 0 else min(buckets, max(0, int(-(-(value - fastest) // step))))
        counts[index] += 1
    return list(zip(marks, counts, strict=True))


def _ms(ns: float) -> str:
    return f"{ns / 1e6:.2f} ms"


def summary(outcome: Outcome) -> str:
    """The ghz summary of `outcome`, with its ratio to bare, generator and CPU lines."""
    r = outcome.result
    lat = r.latencies_ns
    avg = sum(lat) / len(lat) if lat else 0
    lines = [f"=== {outcome.name} ===", "Summary:"]
    lines += [f"  Count:\t{r.count}", f"  Total:\t{_ms(r.total_ns)}"]
    lines += [f"  Slowest:\t{_ms(max(lat, default=0))}", f"  Fastest:\t{_ms(min(lat, default=0))}"]
    lines += [f"  Average:\t{_ms(avg)}", f"  Requests/sec:\t{r.rps:.2f}", ""]
    marks = histogram(lat)
    if marks:
        top = max(c for _, c in marks) or 1
        lines.append("Response time histogram:")
        lines += [f"  {m / 1e6:.3f} [{c}]\t|{'∎' * round(40 * c / top)}" for m, c in marks]
        lines.append("")
    lines.append("Latency distribution:")
    lines += [f"  {p} % in {_ms(v)}" for p, v in percentiles(lat)]
    lines.append("")
    lines.append(f"Status code distribution: ({_status_source(r)})")
    lines += [f"  [{code}]\t{n} responses" for code, n in sorted(r.status_codes.items())]
    if r.errors:
        lines.append("")
        lines.append("Error distribution:")
        lines += [f"  [{n}]\t{text}" for text, n in sorted(r.errors.items(), key=lambda e: -e[1])]
    lines.append("")
    lines += _footer(outcome)
    return "\n".join(lines)


def _status_source(r: LoadResult) -> str:
    return {
        "client": "counted by the Python client",
        "metrics": "server metrics, grpc_server_handled_total delta over the run",
        "unverified": "NOT VERIFIED: h2load sees HTTP statuses only and this server has no metrics",
    }.get(r.status_source, r.status_source)


def other_cores(r: LoadResult) -> float:
    """Cores busy outside the server and the load generator during `r` (database, others)."""
    secs = r.total_ns / 1e9 or 1
    return max(0.0, (r.machine_cpu_s - r.server_cpu_s - r.client_cpu_s) / secs)


def _footer(outcome: Outcome) -> list[str]:
    r, bare = outcome.result, outcome.bare
    secs = r.total_ns / 1e9 or 1
    lines = [
        f"CPU (cores busy, of {os.cpu_count()}): server {r.server_cpu_s / secs:.2f}, "
        f"load generator {r.client_cpu_s / secs:.2f} ({r.generator}), "
        f"everything else {other_cores(r):.2f} (the database, other processes)"
    ]
    unit = "posts" if "messages" in r.extra else "req"
    if bare is not None and outcome.ratio is not None:
        bare_secs = bare.total_ns / 1e9 or 1
        lines.append(
            f"Ratio to bare: {outcome.ratio:.2f} (bare: {bare.rate:.0f} {unit}/s, {bare.generator}, "
            f"cores: server {bare.server_cpu_s / bare_secs:.2f}, else {other_cores(bare):.2f})"
        )
        if other_cores(bare) > NOISE_CORES:
            outcome.notes.append(
                f"other processes kept {other_cores(bare):.2f} cores busy during the bare run "
                "(it uses no database): the machine is not quiet, the ratio is unreliable"
            )
    lines += [f"Note: {n}" for n in [*r.notes, *outcome.notes]]
    return lines


def ghz_json(r: LoadResult, name: str) -> dict[str, Any]:
    """`r` with ghz's report keys (durations in ns), plus this benchmark's own."""
    lat = r.latencies_ns
    total = len(lat) or 1
    return {
        "name": name,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "count": r.count,
        "total": r.total_ns,
        "average": round(sum(lat) / total) if lat else 0,
        "fastest": min(lat, default=0),
        "slowest": max(lat, default=0),
        "rps": r.rps,
        "errorDistribution": r.errors,
        "statusCodeDistribution": r.status_codes,
        "latencyDistribution": [{"percentage": p, "latency": v} for p, v in percentiles(lat)],
        "histogram": [
            {"mark": m / 1e9, "count": c, "frequency": c / total} for m, c in histogram(lat)
        ],
        "generator": r.generator,
        "statusSource": r.status_source,
        "clientCpuSeconds": r.client_cpu_s,
        "serverCpuSeconds": r.server_cpu_s,
        "machineCpuSeconds": r.machine_cpu_s,
        "notes": r.notes,
        "extra": r.extra,
    }


def write(directory: Path, outcome: Outcome) -> Path:
    """Writes `<scenario>.json` (and `<scenario>.bare.json`) under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    slug = outcome.name.lower().replace(" ", "_").replace("/", "_")
    data = ghz_json(outcome.result, outcome.name)
    data["ratioToBare"] = outcome.ratio
    data["notes"] = [*outcome.result.notes, *outcome.notes]
    if outcome.bare is not None:
        (directory / f"{slug}.bare.json").write_text(
            json.dumps(ghz_json(outcome.bare, outcome.name + " (bare)"), indent=2)
        )
    path = directory / f"{slug}.json"
    path.write_text(json.dumps(data, indent=2))
    return path
