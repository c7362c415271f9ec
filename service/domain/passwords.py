"""Argon2id password hashing, off the event loop in a bounded thread pool, with bounded capacity.

argon2-cffi releases the GIL while hashing, so a small pool gives real parallelism while
bounding how much CPU and memory a burst of logins can take; other calls keep flowing. The
calls that may wait for a thread are bounded too: past `queue` waiting, a new call is refused
at once (RESOURCE_EXHAUSTED) instead of queueing for seconds behind a flood of logins.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from blog.v1.error_reason_pb2 import ErrorReason

from service.domain.errors import ResourceExhausted


class Passwords:
    def __init__(
        self, *, memory_kib: int, time_cost: int, parallelism: int, threads: int, queue: int
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID
        )
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="argon2")
        self._capacity = threads + queue
        self._admitted = 0
        # Unknown logins are checked against this, so they cost what a real check costs
        # and timing does not tell which logins exist.
        self._dummy_hash = self._hasher.hash("not a password of anyone: timing equaliser")

    @contextmanager
    def admitted(self) -> Iterator[None]:
        """A place among the calls that hash, held for the whole call, or RESOURCE_EXHAUSTED.

        Taken before anything else the call does, so a refused login costs no database work
        and is refused the same way whether or not the login exists.
        """
        if self._admitted >= self._capacity:
            raise ResourceExhausted(
                "too many password checks in progress; retry with backoff",
                reason=ErrorReason.PASSWORD_HASHING_EXHAUSTED,
            )
        self._admitted += 1
        try:
            yield
        finally:
            self._admitted -= 1

    async def hash(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._hasher.hash, password)

    async def verify(self, hashed: str | None, password: str) -> bool:
        """True when `password` matches `hashed`; a None hash is checked against the dummy."""
        loop = asyncio.get_running_loop()
        target = self._dummy_hash if hashed is None else hashed
        ok = await loop.run_in_executor(self._pool, self._verify, target, password)
        return ok and hashed is not None

    def needs_rehash(self, hashed: str) -> bool:
        return self._hasher.check_needs_rehash(hashed)

    def _verify(self, hashed: str, password: str) -> bool:
        try:
            return self._hasher.verify(hashed, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
