"""SQLAlchemy's asyncio queue pool, with checkouts served first come, first served.

SQLAlchemy's AsyncAdaptedQueue lets a newcomer take a connection that was just returned for
the longest waiter: a returned connection wakes the first waiter, but it stays in the queue
until that waiter runs, and a call that arrives meanwhile takes it without waiting
(`get_nowait` first, and asyncio.Queue's own `get` takes whatever is there). The waiter
finds the queue empty and goes to the back of the line, again and again, while a busy pool
serves newcomers: its wait has no bound but DB_POOL_TIMEOUT, after which its call fails
UNAVAILABLE while newer calls succeed. Here a returned connection goes straight to the
longest waiter, and a checkout waits whenever anyone is waiting before it. (It was not what
made the ListUsers `query` tail, docs/benchmarks.md: that is PostgreSQL waiting for a CPU.)
"""

from __future__ import annotations

import asyncio
from collections import deque
from contextlib import suppress
from typing import Any, TypeVar

from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.util import await_
from sqlalchemy.util.queue import AsyncAdaptedQueue, Empty

T = TypeVar("T")


class FairQueue(AsyncAdaptedQueue[T]):
    """AsyncAdaptedQueue (LIFO or FIFO for the idle connections, as configured) whose waiters
    are served in the order they came: a returned item is handed to the first of them."""

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        super().__init__(maxsize, use_lifo)
        self._waiters: deque[asyncio.Future[T]] = deque()

    def put_nowait(self, item: T) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # not given up (timed out, cancelled)
                waiter.set_result(item)
                return
        super().put_nowait(item)

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        self.put_nowait(item)  # never blocks: a pool holds at most what it handed out

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        # While anyone waits the queue is empty (put_nowait hands items over), so a checkout
        # that may not block (the pool's overflow and dispose) just finds it empty.
        if not block or not self._waiters:
            try:
                return self.get_nowait()
            except Empty:
                if not block:
                    raise
        return await_(self._wait(seconds=timeout))

    async def _wait(self, *, seconds: float | None) -> T:
        waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(seconds):
                return await waiter
        except BaseException as leaving:
            if waiter.done() and not waiter.cancelled():
                # Handed over just as this checkout gave up (its timeout, its call's
                # cancellation): the item goes on to the next in line.
                self.put_nowait(waiter.result())
            else:
                waiter.cancel()
                with suppress(ValueError):  # put_nowait may have dropped it already
                    self._waiters.remove(waiter)
            if isinstance(leaving, TimeoutError):
                raise Empty() from None
            raise


class FairAsyncQueuePool(AsyncAdaptedQueuePool):
    """AsyncAdaptedQueuePool whose checkouts wait in line (FairQueue)."""

    _queue_class: Any = FairQueue
    # SQLAlchemy names a pool's logger after its class's module: this one logs where
    # SQLAlchemy's own pool does (off unless configured), not among the service's INFO lines.
    _sqla_logger_namespace = "sqlalchemy.pool.impl.AsyncAdaptedQueuePool"
