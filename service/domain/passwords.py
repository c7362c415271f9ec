"""Argon2id password hashing, off the event loop in a bounded thread pool.

argon2-cffi releases the GIL while hashing, so a small pool gives real parallelism while
bounding how much CPU and memory a burst of logins can take; other calls keep flowing.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


class Passwords:
    def __init__(self, *, memory_kib: int, time_cost: int, parallelism: int, threads: int) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID
        )
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="argon2")
        # Unknown logins are checked against this, so they cost what a real check costs
        # and timing does not tell which logins exist.
        self._dummy_hash = self._hasher.hash("not a password of anyone: timing equaliser")

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
