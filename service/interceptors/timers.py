"""The arrival and deadline layers' timeout: one timer for the process, not one per call.

`asyncio.timeout` costs a call a dozen Python calls and, under uvloop, a libuv timer created
and closed (5-11 µs a call: docs/benchmarks.md). Every call here gets the same timeout
(DEFAULT_TIMEOUT_SECONDS), so the calls' expiries come in the order they start: `Timers` keeps
the running ones in a dict in that order (insertion order: its first entry always expires
first) and one loop timer, set at the first entry's expiry. A call costs a dict insert and a
delete; the timer is set again only when it fires (about once per timeout under steady load)
or when the first call arrives at an idle server.

No granularity is added: the timer is due exactly when the first expiry is (as
asyncio.timeout's own timer would be), and when it fires every entry due by then is expired;
a call that ended is simply no longer in the dict. The outcome is asyncio.timeout's: the
call's task is cancelled once (an expired entry leaves the dict, so no second cancellation
can follow: interceptors.deadline says why that matters), and at the end that cancellation is
taken back (`uncancel`), becoming a timeout only if it is the exception the call ended with
and nobody else cancelled the task meanwhile (Python 3.11.7's Timeout.__aexit__).
"""

from __future__ import annotations

import asyncio
from asyncio import CancelledError, current_task, get_running_loop


class Expiry:
    """One call's timeout, from `Timers.start` to `Timers.stop`."""

    __slots__ = ("_cancelling", "_task", "expired", "when")

    # No __init__: `start` fills the slots (an __init__ would be one more Python call a call).
    _task: asyncio.Task[object]
    _cancelling: int  # the task's pending cancellations when the timeout started
    when: float  # the loop's clock
    expired: bool  # the timeout ran out and cancelled the call's task


class Timers:
    """The running calls' expiries, `seconds` after each started, and the one loop timer."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._running: dict[Expiry, None] = {}  # in start (and so expiry) order
        self._wake: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> Expiry:
        """A timeout for the current task, `seconds` from now."""
        loop = get_running_loop()
        task = current_task(loop)
        if task is None:
            raise RuntimeError("a timeout needs a task")
        expiry = Expiry()
        expiry._task = task
        expiry._cancelling = task.cancelling()
        expiry.when = when = loop.time() + self.seconds
        expiry.expired = False
        self._running[expiry] = None
        if self._wake is None or self._loop is not loop:
            if self._loop is not loop:  # a new loop (tests): what the old one held is gone
                self._running = {expiry: None}
                self._loop = loop
            self._wake = loop.call_at(when, self._expire, when)
        return expiry

    def stop(self, expiry: Expiry, error: BaseException | None) -> bool:
        """Ends `expiry`; `error` is what the call raised, if anything. True when the timeout
        ended the call: it expired, `error` is the cancellation it sent, and there is no
        other (asyncio.timeout's TimeoutError); the caller then raises its own error."""
        if not expiry.expired:
            del self._running[expiry]
            return False
        return expiry._task.uncancel() <= expiry._cancelling and type(error) is CancelledError

    def _expire(self, due: float) -> None:
        """The loop timer: cancels every call due by `due`, and sets the timer for the next."""
        assert self._loop is not None
        self._wake = None
        due = max(due, self._loop.time())
        running = self._running
        expired: list[Expiry] = []
        for expiry in running:
            if expiry.when > due:
                self._wake = self._loop.call_at(expiry.when, self._expire, expiry.when)
                break
            expired.append(expiry)
        for expiry in expired:
            del running[expiry]
            expiry.expired = True
            expiry._task.cancel()
