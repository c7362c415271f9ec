"""Python function calls per call on the server's event-loop thread: a deterministic cost measure.

Wall-clock and CPU timings on a shared machine are noisy; the number of Python functions the
loop's thread runs for one call is not. This runs the real `service.server.Server` in this
process (its own event loop, uvloop when installed, in a thread of its own, logging as
`python -m service` configures it), makes a user and a post of its own through the API, warms
each method up, then counts with `sys.setprofile` on the loop's thread only while a client in
the main thread makes `--calls` sequential calls (grpcio's blocking stub: its Python runs in
the main thread and is not counted).

The same calls are then made again without the profiler, and the loop thread's CPU time for
them (time.thread_time) is reported per call: less deterministic, but the thread is the
server's only one that runs Python.

"Python calls" counts profile "call" events: a function call, and also every resumption of a
coroutine or generator (each await that suspended). "C calls" counts builtins and C methods
called from Python. Both include what runs on the loop between calls (the log handler's
flush, say), which is part of what calls cost.

    DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/bench_timers \\
        .venv/bin/python -m bench.callcount [--calls 300] [--only GetUser,CreatePost] [--top 25]

The database must be migrated (`make migrate`, or any database `make bench` seeded). Set the
service's variables (LOG_FORMAT, METRICS_PORT, ...) in the environment as for the service;
--metrics serves metrics on a free port as `make bench` does. The log lines go to stderr.
To compare with another checkout, run this file from that checkout's root (copy it there):
the `service` package imported is the one of the current directory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from types import CodeType, FrameType
from typing import Any, TypeVar

import grpc
from blog.v1 import (
    post_service_pb2,
    post_service_pb2_grpc,
    resources_pb2,
    user_service_pb2,
    user_service_pb2_grpc,
)
from google.protobuf.field_mask_pb2 import FieldMask

METHODS = ("GetUser", "CreatePost", "UpdatePost")
T = TypeVar("T")
ROOT = Path.cwd()


class Profile:
    """Counts profile events of the thread it is installed in, per code object."""

    def __init__(self) -> None:
        self.calls = 0
        self.c_calls = 0
        self.by_code: Counter[CodeType] = Counter()
        self.cpu_seconds = 0.0  # the loop thread's, over as many calls, without the profiler

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            self.calls += 1
            self.by_code[frame.f_code] += 1
        elif event == "c_call":
            self.c_calls += 1


def _where(code: CodeType) -> str:
    path = Path(code.co_filename)
    try:
        shown = str(path.relative_to(ROOT))
    except ValueError:
        parts = path.parts
        shown = (
            "/".join(parts[parts.index("site-packages") + 1 :])
            if "site-packages" in parts
            else str(path)
        )
    return f"{shown}:{code.co_firstlineno} {code.co_qualname}"


def _package(code: CodeType) -> str:
    """Who a function belongs to: service.<subpackage>, a site-package, or the stdlib module."""
    path = Path(code.co_filename)
    parts = path.parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    try:
        inside = path.relative_to(ROOT).parts
    except ValueError:
        inside = ()
    if inside[:1] == ("service",):
        return ".".join(part.removesuffix(".py") for part in inside[:2])
    if code.co_filename.startswith("<"):
        return code.co_filename  # <frozen abc>, <string>
    return f"stdlib {path.stem if path.parent.name.startswith('python3') else path.parent.name}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LoopThread:
    """The server's event loop, in a thread of its own."""

    def __init__(self) -> None:
        try:
            import uvloop
        except ImportError:  # pragma: no cover
            self.loop = asyncio.new_event_loop()
        else:
            self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, work: Any) -> Any:
        """Runs a coroutine on the loop and waits for its result."""
        return asyncio.run_coroutine_threadsafe(work, self.loop).result()

    def call(self, function: Callable[[], T]) -> T:
        """Runs `function` on the loop's thread and returns what it returned."""
        done: Future[T] = Future()

        def run() -> None:
            done.set_result(function())

        self.loop.call_soon_threadsafe(run)
        return done.result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()


def _requests(channel: grpc.Channel) -> dict[str, Callable[[], object]]:
    """One call per method, on rows this run made through the API."""
    users = user_service_pb2_grpc.UserServiceStub(channel)
    posts = post_service_pb2_grpc.PostServiceStub(channel)
    tag = os.urandom(6).hex()
    user = users.CreateUser(
        user_service_pb2.CreateUserRequest(
            email=f"callcount-{tag}@example.com", username=f"callcount_{tag}", password="x" * 12
        )
    )
    post = posts.CreatePost(
        post_service_pb2.CreatePostRequest(author_id=user.id, title="callcount", content="body")
    )
    get = user_service_pb2.GetUserRequest(id=user.id)
    create = post_service_pb2.CreatePostRequest(
        author_id=user.id, title="callcount", content="a post of bench.callcount", published=True
    )
    update = post_service_pb2.UpdatePostRequest(
        post=resources_pb2.Post(id=post.id, title="callcount, updated"),
        update_mask=FieldMask(paths=["title"]),
    )
    return {
        "GetUser": lambda: users.GetUser(get),
        "CreatePost": lambda: posts.CreatePost(create),
        "UpdatePost": lambda: posts.UpdatePost(update),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.callcount",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--calls", type=int, default=300, help="sequential calls per method (300)")
    parser.add_argument("--warmup", type=int, default=50, help="calls per method first (50)")
    parser.add_argument("--only", default=",".join(METHODS), help=f"methods ({','.join(METHODS)})")
    parser.add_argument("--top", type=int, default=0, help="list the N most called functions")
    parser.add_argument("--metrics", action="store_true", help="metrics on, as in make bench")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.only.split(",") if m.strip()]
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; known: {', '.join(METHODS)}")
    if "DATABASE_URL" not in os.environ:
        parser.error("DATABASE_URL must name a migrated database")

    os.environ["GRPC_HOST"] = "127.0.0.1"
    os.environ["GRPC_PORT"] = str(_free_port())
    if args.metrics:
        os.environ["METRICS_PORT"] = str(_free_port())
    from service import logs
    from service.server import Server
    from service.settings import load_settings

    settings = load_settings()
    logs.configure(settings.log_level, settings.log_format)
    loop = LoopThread()
    server: Server = loop.run(_make(Server, settings))
    loop.run(server.start())
    results: list[tuple[str, Profile]] = []
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            calls = _requests(channel)
            for method in methods:
                call = calls[method]
                for _ in range(args.warmup):
                    call()
                profile = Profile()
                loop.call(lambda p=profile: sys.setprofile(p))  # type: ignore[misc]
                for _ in range(args.calls):
                    call()
                loop.call(lambda: sys.setprofile(None))
                # The same calls again, unprofiled: the loop thread's CPU time for them.
                cpu = loop.call(time.thread_time)
                for _ in range(args.calls):
                    call()
                profile.cpu_seconds = loop.call(time.thread_time) - cpu
                results.append((method, profile))
    finally:
        loop.run(server.stop())
        loop.stop()

    print(f"service: {Path(sys.modules['service'].__file__ or '').parent}")
    head = f"{'method':<12} {'Python calls/call':>18} {'C calls/call':>13} {'loop CPU µs/call':>17}"
    print(f"{head}   ({args.calls} calls)")
    for method, profile in results:
        n = args.calls
        print(
            f"{method:<12} {profile.calls / n:>18.1f} {profile.c_calls / n:>13.1f}"
            f" {profile.cpu_seconds / n * 1e6:>17.1f}"
        )
    for method, profile in results:
        packages: Counter[str] = Counter()
        for code, count in profile.by_code.items():
            packages[_package(code)] += count
        print(f"\n{method}: Python calls per call by package")
        for package, count in packages.most_common():
            print(f"  {count / args.calls:7.2f}  {package}")
        if args.top:
            print(f"\n{method}: the {args.top} most called functions, calls per call")
            for code, count in profile.by_code.most_common(args.top):
                print(f"  {count / args.calls:7.2f}  {_where(code)}")
    return 0


async def _make(kind: Callable[..., Any], *args: Any) -> Any:
    """Builds `kind(*args)` on the loop (the server's gRPC objects belong to it)."""
    return kind(*args)


if __name__ == "__main__":
    sys.exit(main())
