"""The call's session: opened by the session interceptor, read by repositories through one accessor.

A read-only call's session may also lend its repositories the raw driver connection (see
`driver_connection`): checked out of the same SQLAlchemy pool, held for the call, and given
back by the interceptor when the call ends, like the session's own connection.
"""

from __future__ import annotations

from contextlib import suppress
from contextvars import ContextVar
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.util import greenlet_spawn

_current: ContextVar[AsyncSession] = ContextVar("blog_db_session")
_LEASE = "driver_lease"


def current_session() -> AsyncSession:
    """The session of the call being served. Only code running inside a call may use it."""
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError("no database session: called outside a gRPC call") from None


def bind_session(session: AsyncSession) -> object:
    return _current.set(session)


def unbind_session(token: object) -> None:
    # A stream cancelled while suspended at `yield` is closed later by asyncio's generator
    # finalizer, in another context, where the token cannot be reset; nothing needs undoing
    # there: every call runs in a task (and a context) of its own.
    with suppress(ValueError):
        _current.reset(token)  # type: ignore[arg-type]


async def driver_connection(session: AsyncSession) -> Any:
    """The asyncpg connection this call reads on, checked out of the session's engine pool.

    Going to the pool directly skips the ORM session's transaction bookkeeping, which costs
    as much as the query itself; only autocommit (read-only) sessions may use it, since no
    transaction is involved.
    """
    lease: Any = session.info.get(_LEASE)
    if lease is None:
        engine: Any = session.bind
        # Inside a greenlet: checking out may mean (re)connecting, which is I/O.
        lease = await greenlet_spawn(engine.sync_engine.pool.connect)
        session.info[_LEASE] = lease
    return lease.driver_connection


def release_without_io(session: AsyncSession, *, discard: bool) -> bool:
    """Gives back what the call holds when no I/O is needed; False when `end_session` must run.

    A healthy leased connection is an autocommit one with nothing to roll back: returning it
    to a pool with room for it is plain bookkeeping, done here synchronously, with no
    greenlet and no task. Most read-only calls end this way.
    """
    if session.in_transaction():
        return False
    lease = session.info.get(_LEASE)
    if lease is None:
        return True  # the call never touched the database (e.g. it failed validation)
    if discard or lease.driver_connection.is_closed():
        return False
    engine: Any = session.bind
    pool = engine.sync_engine.pool
    if pool.checkedin() >= pool.size():
        return False  # an overflow connection: the pool will close it, which is I/O
    del session.info[_LEASE]
    lease.close()
    return True


async def end_session(session: AsyncSession, *, rollback: bool, discard: bool) -> None:
    """Ends the call's use of the database: roll back if asked, then give every connection back.

    `discard` drops a leased driver connection instead of pooling it: after a cancelled
    statement or a lost connection its state is not worth trusting. A rollback that fails
    (the connection is gone) leaves SQLAlchemy to invalidate that connection on close.
    """
    if rollback and session.in_transaction():
        with suppress(Exception):
            await session.rollback()
    lease = session.info.pop(_LEASE, None)
    if lease is not None:
        if discard or lease.driver_connection.is_closed():
            await greenlet_spawn(lease.invalidate)
        else:
            await greenlet_spawn(lease.close)
    if session.in_transaction():
        await session.close()
