"""The issue's performance targets, judged on one run's outcomes, and the final table.

Targets are ratios measured in the same run (absolute figures drift between machines):
GetUser >= 0.35 of bare, GetUserByEmail >= 0.30, ListPosts (50 with authors) >= 0.12, deep page
within 1.2x of page 1, CreatePost >= 0.20, p99 <= 2.5x p50 in every read scenario,
GRPC_WORKERS=2 above 1 worker, StreamPosts of 500,000 posts with RSS growth < 50 MB.
"""

from __future__ import annotations

from bench.report import Outcome, other_cores, percentile

RATIO_TARGETS = {"GetUser": 0.35, "GetUserByEmail": 0.30, "ListPosts": 0.12, "CreatePost": 0.20}
MB = 1024 * 1024


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("MET" if ok else "MISSED")


def judge(outcomes: dict[str, Outcome]) -> list[tuple[str, str, bool | None]]:
    """(target, measured figure, met?) for every target; None when the run did not measure it."""
    out: list[tuple[str, str, bool | None]] = []
    for name, want in RATIO_TARGETS.items():
        ratio = outcomes[name].ratio if name in outcomes else None
        shown = "not run" if ratio is None else f"{ratio:.2f}"
        out.append(
            (f"{name} >= {want:.2f} of bare", shown, None if ratio is None else ratio >= want)
        )
    page1, deep = outcomes.get("ListPosts"), outcomes.get("ListPosts deep page")
    if page1 and deep and deep.result.rps:
        slower = page1.result.rps / deep.result.rps
        out.append(("deep page within 1.2x of page 1", f"{slower:.2f}x", slower <= 1.2))
    else:
        out.append(("deep page within 1.2x of page 1", "not run", None))
    for outcome in outcomes.values():
        if outcome.kind == "read":
            p50, p99 = percentile(outcome.result, 50), percentile(outcome.result, 99)
            ratio = p99 / p50 if p50 else float("inf")
            out.append((f"{outcome.name}: p99 <= 2.5x p50", f"{ratio:.2f}x", ratio <= 2.5))
    workers = outcomes.get("GetUser GRPC_WORKERS=2")
    if workers and "GetUser" in outcomes:
        gain = workers.result.rps / (outcomes["GetUser"].result.rps or 1)
        out.append(("GRPC_WORKERS=2 above 1 worker (GetUser)", f"{gain:.2f}x", gain > 1))
    else:
        out.append(("GRPC_WORKERS=2 above 1 worker (GetUser)", "not run", None))
    stream = outcomes.get("StreamPosts")
    if stream and "rss_growth" in stream.result.extra:
        rows, growth = stream.result.extra["messages"], stream.result.extra["rss_growth"]
        ok = None if rows < 500_000 else growth < 50 * MB  # --quick stops the stream early
        shown = f"{rows:.0f} posts, RSS +{growth / MB:.1f} MB"
        out.append(("StreamPosts 500,000 posts, RSS growth < 50 MB", shown, ok))
    return out


def table(outcomes: dict[str, Outcome]) -> str:
    """One line per scenario: rps, p50, p99, ratio to bare, p99/p50, generator, cores used."""
    head = f"{'scenario':<26}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'/bare':>7}{'p99/p50':>8}"
    lines = [head + "  generator  cores: client server else", "-" * 98]
    for o in outcomes.values():
        r = o.result
        secs = r.total_ns / 1e9 or 1
        p50, p99 = (0, 0) if o.kind == "stream" else (percentile(r, 50), percentile(r, 99))
        ratio = "-" if o.ratio is None else f"{o.ratio:.2f}"
        spread = f"{p99 / p50:.2f}" if p50 else "-"
        rest = other_cores(r)
        lines.append(
            f"{o.name:<26}{r.rate:>8.0f}{p50 / 1e6:>9.2f}{p99 / 1e6:>9.2f}{ratio:>7}{spread:>8}"
            f"  {r.generator:<9}{r.client_cpu_s / secs:>14.2f}{r.server_cpu_s / secs:>7.2f}"
            f"{rest:>5.2f}"
        )
    lines.append("StreamPosts: req/s is posts/s. cores: busy cores during the measured window;")
    lines.append("'else' is every other process on the machine (PostgreSQL, anything running).")
    return "\n".join(lines)


def verdicts(outcomes: dict[str, Outcome]) -> str:
    """The targets as lines ending MET / MISSED / n/a."""
    return "\n".join(f"  {t:<48}{shown:>28}  {_verdict(ok)}" for t, shown, ok in judge(outcomes))
