"""Point reads batched under load: many lookups in flight, one statement (`= ANY($1)`).

A `PointLookup` answers "the rows of key k" for one kind of lookup (a user by id, by email, a
post by id). A lookup that finds no statement of its kind at the database goes at once, on
its own call's session, exactly as an unbatched read would: at low load nothing waits and
nothing is added. A lookup that finds one there queues; when that statement returns, the
queue goes as the next batch: one statement for every key in it, on a connection the batch
leases from the read pool for that statement alone and gives back after it. The callers it
serves lease no connection of their own.

What each caller keeps:

* read-only: only a call whose session is on the read pool and has not leased a connection
  yet (a NO_SIDE_EFFECTS call's first statement) joins a batch; a write call, or a read that
  already holds a connection (a transaction through PgBouncer, a snapshot), reads on its own;
* its own deadline: a caller that gives up (gRPC cancels it at its deadline) leaves its batch
  at once; a queued batch that everyone left is never sent, and a batch at the database that
  everyone left is cancelled, which cancels its statement inside PostgreSQL (the session's
  clean-up waits for the cancel request to be answered, service.db.session);
* its own answer: the rows are given to each caller by key, so NOT_FOUND stays per key, and a
  statement that fails fails every caller still waiting on it, with the database's error;
* tracing: the batch statement's span (service.db.spans, one per statement) belongs to the
  trace of the call that opened the batch, or to the first sampled caller that joined it
  while it queued; the other callers' traces show no statement of their own.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar

from opentelemetry import trace

from service.db.session import CallSession, current_session
from service.repositories.base import Query, Row, fetch_rows

if TYPE_CHECKING:
    from service.db.engine import Database

K = TypeVar("K", bound=Hashable)

# Keys in one statement at most: one batch's rows stay a bounded message, however many
# lookups queue (the admission limit bounds them too).
MAX_KEYS = 500


def _may_join(session: CallSession, read_pool: object) -> bool:
    """Whether the call's own session could have run this lookup on the read pool as its first
    statement. It reads CallSession's private state: service.db.session should expose this
    (e.g. `read_only` and `leased` properties); until then this is the one place that looks."""
    return session._pool is read_pool and session._driver is None


class _Batch(Generic[K]):
    """The keys of one statement, each with the callers waiting on it."""

    __slots__ = ("at_database", "context", "task", "traced", "waiters", "waiting")

    def __init__(self, context: contextvars.Context, traced: bool) -> None:
        self.waiters: dict[K, list[asyncio.Future[list[Row]]]] = {}
        self.waiting = 0
        self.context = context  # the trace (and log context) the statement runs in
        self.traced = traced
        self.task: asyncio.Task[None] | None = None  # set when sent
        self.at_database = False  # holds one of the lookup's statement slots

    def leave(self, key: K, future: asyncio.Future[list[Row]]) -> None:
        futures = self.waiters[key]
        futures.remove(future)
        if not futures and self.task is None:
            del self.waiters[key]  # not sent yet: the key is not sent at all
        self.waiting -= 1
        if self.waiting == 0 and self.task is not None:
            self.task.cancel()  # nobody waits: cancel the statement inside PostgreSQL


class PointLookup(Generic[K]):
    """Lookups of one kind: `single` (one key, parameter `single_param`) run on a call's own
    session, `batch` (a list of keys, parameter `batch_param`) on a batch's; `key_of` reads a
    batch row's key. With no `database`, every lookup runs on its call's session."""

    def __init__(
        self,
        database: Database | None,
        *,
        single: Query,
        single_param: str,
        batch: Query,
        batch_param: str,
        key_of: Callable[[Row], K],
        in_flight: int = 1,
    ) -> None:
        self._database = database
        self._read_pool = None if database is None else database.reader.sync_engine.pool
        self._single, self._single_param = single, single_param
        self._batch, self._batch_param = batch, batch_param
        self._key_of = key_of
        self._limit = in_flight  # statements of this kind at the database at once
        self._in_flight = 0
        self._queue: list[_Batch[K]] = []
        self._tasks: set[asyncio.Task[None]] = set()  # referenced while they run

    async def rows(self, key: K) -> Sequence[Row]:
        """The rows whose key is `key` (processed as `Query` does), from whichever statement."""
        session = current_session()
        if self._read_pool is None or not _may_join(session, self._read_pool):
            return await fetch_rows(session, self._single, {self._single_param: key})
        if self._in_flight < self._limit and not self._queue:
            return await self._alone(session, key)
        return await self._queued(key)

    async def _alone(self, session: CallSession, key: K) -> Sequence[Row]:
        """Nothing of this kind at the database: the call's own statement goes now."""
        self._in_flight += 1
        try:
            return await fetch_rows(session, self._single, {self._single_param: key})
        finally:
            self._in_flight -= 1
            self._dispatch()

    async def _queued(self, key: K) -> Sequence[Row]:
        batch = self._queue[-1] if self._queue else None
        if batch is None or (len(batch.waiters) >= MAX_KEYS and key not in batch.waiters):
            traced = trace.get_current_span().is_recording()
            batch = _Batch(contextvars.copy_context(), traced)
            self._queue.append(batch)
        elif not batch.traced and trace.get_current_span().is_recording():
            batch.context, batch.traced = contextvars.copy_context(), True
        future: asyncio.Future[list[Row]] = asyncio.get_running_loop().create_future()
        batch.waiters.setdefault(key, []).append(future)
        batch.waiting += 1
        try:
            return await future
        except asyncio.CancelledError:
            if not future.done() or future.cancelled():
                batch.leave(key, future)
                if batch.waiting == 0 and batch.task is None:
                    self._queue.remove(batch)  # everyone left before it was sent
            raise

    def _dispatch(self) -> None:
        """Sends the oldest queued batch if there is room at the database for it."""
        while self._queue and self._in_flight < self._limit:
            batch = self._queue.pop(0)
            self._in_flight += 1
            batch.at_database = True
            task = asyncio.get_running_loop().create_task(self._send(batch), context=batch.context)
            batch.task = task
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._done, batch))

    def _returned(self, batch: _Batch[K]) -> None:
        """The batch's statement is over (answered, failed, or never sent): the next may go."""
        if batch.at_database:
            batch.at_database = False
            self._in_flight -= 1
            self._dispatch()

    def _done(self, batch: _Batch[K], task: asyncio.Task[None]) -> None:
        # Also for a task cancelled before it ever ran, whose own `finally` never runs.
        self._tasks.discard(task)
        self._returned(batch)
        for futures in batch.waiters.values():
            for future in futures:
                future.cancel()  # no-op for the answered; none is left waiting forever

    async def _send(self, batch: _Batch[K]) -> None:
        assert self._database is not None
        session = self._database.session(read_only=True)
        ended_by: BaseException | None = None
        try:
            try:
                rows = await fetch_rows(
                    session, self._batch, {self._batch_param: list(batch.waiters)}
                )
                await session.commit()
            finally:
                self._returned(batch)
        except BaseException as error:
            ended_by = error
            if not isinstance(error, Exception):
                raise  # cancelled: every caller left (_done cancels any still there)
            for futures in batch.waiters.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(error)
        else:
            found: dict[K, list[Row]] = {}
            for row in rows:
                found.setdefault(self._key_of(row), []).append(row)
            for key, futures in batch.waiters.items():
                answer = found.get(key, [])
                for future in futures:
                    if not future.done():
                        future.set_result(answer)
        finally:
            await session.end(ended_by)
