"""Server CPU time per call of two checkouts of the service, alternating, under h2load.

For each round and each checkout in turn: starts `python -m service` from that checkout's
directory (so its `service` package is the one imported; the Python is this one), waits for
health SERVING, sends `--warmup` calls, then reads the server's CPU time (user + system,
psutil) around `--calls` calls of the method sent by one h2load process (`--connections`
connections, `--concurrency` calls in flight), and stops it. Two readings: the whole process
(gRPC core's poller threads too, whose share swings with how the machine schedules them) and
the event loop's thread alone (the main thread: all the Python of a call runs there). Reports
each round, the medians per checkout, and the median of the rounds' B/A ratios.

CPU time per call is what one event-loop thread can serve: on a busy 2-core machine wall
clock and throughput are noisy, the CPU a call costs the server much less so. Alternating A
and B over several rounds spreads what the machine does meanwhile over both.

    DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/bench_timers \\
        .venv/bin/python -m bench.cpucompare --a /tmp/main-export --b . \\
            [--method GetUser] [--rounds 5] [--calls 20000]

The database must be migrated and hold users and posts (`make bench` seeds it). Rows used:
the user with the smallest id (GetUser, and the author of CreatePost), the post with the
smallest id (UpdatePost). The servers log to <checkout>-<round>.log in a temporary directory;
calls that did not end OK (counted from those logs) are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import grpc
import psutil
from blog.v1 import post_service_pb2, resources_pb2, user_service_pb2
from google.protobuf.field_mask_pb2 import FieldMask

from bench.grpcframe import write_body
from bench.h2load import HEADERS
from bench.servers import free_port

METHODS = ("GetUser", "CreatePost", "UpdatePost")


async def _rows(url: str) -> tuple[int, int]:
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        user = await connection.fetchval("SELECT min(id) FROM users")
        post = await connection.fetchval("SELECT min(id) FROM posts")
    finally:
        await connection.close()
    if user is None or post is None:
        raise SystemExit("cpucompare: the database has no users or no posts (make bench seeds it)")
    return user, post


def _request(method: str, user: int, post: int) -> tuple[str, bytes]:
    if method == "GetUser":
        message: object = user_service_pb2.GetUserRequest(id=user)
        path = "/blog.v1.UserService/GetUser"
    elif method == "CreatePost":
        message = post_service_pb2.CreatePostRequest(
            author_id=user, title="cpucompare", content="a post of bench.cpucompare", published=True
        )
        path = "/blog.v1.PostService/CreatePost"
    else:
        message = post_service_pb2.UpdatePostRequest(
            post=resources_pb2.Post(id=post, title="cpucompare, updated"),
            update_mask=FieldMask(paths=["title"]),
        )
        path = "/blog.v1.PostService/UpdatePost"
    return path, message.SerializeToString()  # type: ignore[attr-defined]


def _start(checkout: Path, url: str, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": str(port),
        "METRICS_PORT": str(free_port()),  # as make bench runs it
        "GRPC_WORKERS": "1",
    }
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service"],
            cwd=checkout,
            env=env,
            stdout=sink,
            stderr=sink,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check", None, None)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"cpucompare: {checkout} exited:\n{log.read_text()[-2000:]}")
            try:
                if check(b"", timeout=2) == b"\x08\x01":
                    return proc, port
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"cpucompare: {checkout} did not become SERVING")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _h2load(port: int, path: str, body: Path, calls: int, args: argparse.Namespace) -> None:
    exe = shutil.which("h2load")
    if exe is None:
        raise SystemExit("cpucompare: h2load not found (apt-get install nghttp2-client)")
    streams = max(1, args.concurrency // args.connections)
    cmd = [exe, "-n", str(calls), "-c", str(args.connections), "-m", str(streams), "-d", str(body)]
    for header in HEADERS:
        cmd += ["-H", header]
    subprocess.run([*cmd, f"http://127.0.0.1:{port}{path}"], check=True, stdout=subprocess.DEVNULL)


def _loop_cpu(process: psutil.Process) -> float:
    """CPU seconds of the process's main thread, where `python -m service` runs its loop."""
    for thread in process.threads():
        if thread.id == process.pid:
            return float(thread.user_time + thread.system_time)
    raise SystemExit("cpucompare: the server's main thread is gone")


def _not_ok(log: Path) -> int:
    return sum(
        1
        for line in log.read_text(errors="replace").splitlines()
        if "service.calls" in line and " OK " not in line
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cpucompare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--a", type=Path, required=True, help="checkout A (the baseline)")
    parser.add_argument("--b", type=Path, required=True, help="checkout B")
    parser.add_argument("--method", choices=METHODS, default="GetUser")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20_000, help="measured calls per run")
    parser.add_argument("--warmup", type=int, default=3_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args(argv)
    url = os.environ.get("DATABASE_URL")
    if not url:
        parser.error("DATABASE_URL must name a seeded database")
    user, post = asyncio.run(_rows(url))
    path, payload = _request(args.method, user, post)
    per_call: dict[str, list[float]] = {"A": [], "B": []}
    loop_per_call: dict[str, list[float]] = {"A": [], "B": []}
    with tempfile.TemporaryDirectory(prefix="cpucompare-") as tmp:
        body = write_body(Path(tmp) / "body.bin", payload)
        for round_ in range(args.rounds):
            for name, checkout in (("A", args.a), ("B", args.b)):
                log = Path(tmp) / f"{name}-{round_}.log"
                proc, port = _start(checkout.resolve(), url, log)
                try:
                    _h2load(port, path, body, args.warmup, args)
                    process = psutil.Process(proc.pid)
                    before, loop_before = process.cpu_times(), _loop_cpu(process)
                    started = time.monotonic()
                    _h2load(port, path, body, args.calls, args)
                    wall = time.monotonic() - started
                    after, loop_after = process.cpu_times(), _loop_cpu(process)
                finally:
                    _stop(proc)
                cpu = (after.user - before.user) + (after.system - before.system)
                per_call[name].append(cpu / args.calls * 1e6)
                loop_per_call[name].append((loop_after - loop_before) / args.calls * 1e6)
                print(
                    f"round {round_ + 1} {name}: {per_call[name][-1]:7.1f} µs CPU/call, "
                    f"loop thread {loop_per_call[name][-1]:7.1f} "
                    f"({args.calls / wall:6.0f} calls/s, not OK: {_not_ok(log)})",
                    flush=True,
                )
    for what, figures in (("process", per_call), ("loop thread", loop_per_call)):
        a, b = statistics.median(figures["A"]), statistics.median(figures["B"])
        ratios = [y / x for x, y in zip(figures["A"], figures["B"], strict=True)]
        print(
            f"{args.method}, {what}: median CPU µs/call A {a:.1f}, B {b:.1f}; "
            f"B/A per round median {statistics.median(ratios):.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
