"""Raw Argon2id verification on the service's hashing threads: AuthenticateUser's baseline.

AuthenticateUser is bounded by Argon2 by design, so its ratio compares it with what this machine
hashes without gRPC or a database: PASSWORD_HASH_THREADS threads verifying the seeded hash with
the service's cost settings, back to back for the run's duration, in the same run. argon2-cffi
releases the GIL while it hashes, so the threads use as many cores as the service's pool does.
"""

from __future__ import annotations

import os
import resource
import threading
import time

from argon2 import PasswordHasher

from bench.model import LoadResult
from bench.seed import PASSWORD, password_hash


def threads() -> int:
    """The service's hashing threads (PASSWORD_HASH_THREADS, else its default)."""
    from service.settings import Settings

    default = Settings.model_fields["password_hash_threads"].default
    return int(os.environ.get("PASSWORD_HASH_THREADS", default))


def capacity() -> int:
    """Calls the service hashes or queues at once: threads + PASSWORD_HASH_QUEUE."""
    from service.settings import Settings

    default = Settings.model_fields["password_hash_queue"].default
    return threads() + int(os.environ.get("PASSWORD_HASH_QUEUE", default))


def measure(seconds: float, count: int | None = None) -> LoadResult:
    """`count` threads (default: the service's) verifying PASSWORD for `seconds`."""
    hashed, hasher = password_hash(), PasswordHasher()
    count = count or threads()
    latencies: list[list[int]] = [[] for _ in range(count)]
    deadline = time.monotonic() + seconds

    def work(out: list[int]) -> None:
        while time.monotonic() < deadline:
            began = time.perf_counter_ns()
            hasher.verify(hashed, PASSWORD)
            out.append(time.perf_counter_ns() - began)

    cpu = _cpu()
    began = time.perf_counter_ns()
    pool = [threading.Thread(target=work, args=(out,)) for out in latencies]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    total = time.perf_counter_ns() - began
    flat = [v for out in latencies for v in out]
    return LoadResult(
        generator=f"argon2id x{count} threads",
        count=len(flat),
        total_ns=total,
        latencies_ns=flat,
        status_codes={"OK": len(flat)},
        server_cpu_s=_cpu() - cpu,
    )


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
