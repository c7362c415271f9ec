"""Issue 15's performance targets, judged on one run's outcomes, and the final table.

Targets are ratios measured in the same run (absolute figures drift between machines), defaults
unless said: GetUser, GetUserByEmail and ListPosts >= 0.55 of bare, ListUsers `query` >= 0.40,
CreatePost and UpdatePost >= 0.45, StreamPosts >= 0.90 of the bare stream, AuthenticateUser >=
0.90 of raw Argon2id hashing, GRPC_WORKERS=2 >= 1.5x one worker with p99 <= 2.5x p50, and every
read scenario's p99 <= 2.5x p50, also at 256 calls in flight over 64 connections. Kept from
before: the deep page within 1.2x of page 1, StreamPosts of 500,000 posts with RSS growth < 50 MB.
GetUser WITH_POSTS is a read (its p99 is judged); BatchCreatePosts has no target of its own.
"""

from __future__ import annotations

from bench.report import Outcome, other_cores, percentile
from bench.scenarios import FLEET

QUERY = "ListUsers query="
RATIO_TARGETS = {
    "GetUser": 0.55,
    "GetUserByEmail": 0.55,
    "ListPosts": 0.55,
    QUERY: 0.40,
    "CreatePost": 0.45,
    "UpdatePost": 0.45,
    "StreamPosts": 0.90,
    "AuthenticateUser": 0.90,
}
SPREAD = 2.5  # p99 / p50
WORKERS_GAIN = 1.5
MB = 1024 * 1024
Verdict = tuple[str, str, bool | None]


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("MET" if ok else "MISSED")


def _find(outcomes: dict[str, Outcome], name: str) -> Outcome | None:
    """The outcome called `name`, or the one run at 64 in flight starting with it (QUERY)."""
    if name in outcomes:
        return outcomes[name]
    found = [o for n, o in outcomes.items() if n.startswith(name) and not n.endswith(FLEET)]
    return found[0] if found else None


def spread(outcome: Outcome) -> float:
    p50, p99 = percentile(outcome.result, 50), percentile(outcome.result, 99)
    return p99 / p50 if p50 else float("inf")


def _ratios(outcomes: dict[str, Outcome]) -> list[Verdict]:
    out: list[Verdict] = []
    for name, want in RATIO_TARGETS.items():
        found = _find(outcomes, name)
        ratio = found.ratio if found else None
        label = f"{found.name if found else name} >= {want:.2f}"
        label += " of raw hashing" if name == "AuthenticateUser" else " of bare"
        shown = "not run" if ratio is None else f"{ratio:.2f}"
        out.append((label, shown, None if ratio is None else ratio >= want))
    return out


def _workers(outcomes: dict[str, Outcome]) -> list[Verdict]:
    workers, one = outcomes.get("GetUser GRPC_WORKERS=2"), outcomes.get("GetUser")
    label = f"GRPC_WORKERS=2 >= {WORKERS_GAIN}x one worker (GetUser)"
    if not (workers and one):
        return [
            (label, "not run", None),
            (f"GRPC_WORKERS=2: p99 <= {SPREAD}x p50", "not run", None),
        ]
    gain = workers.result.rps / (one.result.rps or 1)
    ratio = spread(workers)
    return [
        (label, f"{gain:.2f}x", gain >= WORKERS_GAIN),
        (f"GRPC_WORKERS=2: p99 <= {SPREAD}x p50", f"{ratio:.2f}x", ratio <= SPREAD),
    ]


def judge(outcomes: dict[str, Outcome]) -> list[Verdict]:
    """(target, measured figure, met?) for every target; None when the run did not measure it."""
    out = _ratios(outcomes)
    page1, deep = outcomes.get("ListPosts"), outcomes.get("ListPosts deep page")
    if page1 and deep and deep.result.rps:
        slower = page1.result.rps / deep.result.rps
        out.append(("deep page within 1.2x of page 1", f"{slower:.2f}x", slower <= 1.2))
    else:
        out.append(("deep page within 1.2x of page 1", "not run", None))
    for outcome in outcomes.values():
        if outcome.kind == "read":
            ratio = spread(outcome)
            out.append((f"{outcome.name}: p99 <= {SPREAD}x p50", f"{ratio:.2f}x", ratio <= SPREAD))
    out += _workers(outcomes)
    stream = outcomes.get("StreamPosts")
    if stream and "rss_growth" in stream.result.extra:
        rows, growth = stream.result.extra["messages"], stream.result.extra["rss_growth"]
        ok = None if rows < 500_000 else growth < 50 * MB  # --quick stops the stream early
        shown = f"{rows:.0f} posts, RSS +{growth / MB:.1f} MB"
        out.append(("StreamPosts 500,000 posts, RSS growth < 50 MB", shown, ok))
    return out


def table(outcomes: dict[str, Outcome]) -> str:
    """One line per scenario: rps, p50, p99, ratio to bare, p99/p50, generator, cores used."""
    head = f"{'scenario':<34}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'/bare':>7}{'p99/p50':>8}"
    lines = [head + "  generator  cores: client server else", "-" * 106]
    for o in outcomes.values():
        r = o.result
        secs = r.total_ns / 1e9 or 1
        p50, p99 = (0, 0) if o.kind == "stream" else (percentile(r, 50), percentile(r, 99))
        ratio = "-" if o.ratio is None else f"{o.ratio:.2f}"
        shown = f"{p99 / p50:.2f}" if p50 else "-"
        rest = other_cores(r)
        lines.append(
            f"{o.name:<34}{r.rate:>8.0f}{p50 / 1e6:>9.2f}{p99 / 1e6:>9.2f}{ratio:>7}{shown:>8}"
            f"  {r.generator:<9}{r.client_cpu_s / secs:>14.2f}{r.server_cpu_s / secs:>7.2f}"
            f"{rest:>5.2f}"
        )
    lines.append(
        "StreamPosts: req/s is posts/s. AuthenticateUser: /bare is to raw Argon2id hashing."
    )
    lines.append("cores: busy cores during the measured window; 'else' is every other process on")
    lines.append(
        "the machine (PostgreSQL, anything running). @256/64: 256 in flight, 64 connections."
    )
    return "\n".join(lines)


def verdicts(outcomes: dict[str, Outcome]) -> str:
    """The targets as lines ending MET / MISSED / n/a."""
    return "\n".join(f"  {t:<56}{shown:>28}  {_verdict(ok)}" for t, shown, ok in judge(outcomes))
