"""The call's session: opened by the session interceptor, read by repositories through one accessor."""

from __future__ import annotations

from contextvars import ContextVar

from sqlalchemy.ext.asyncio import AsyncSession

_current: ContextVar[AsyncSession] = ContextVar("blog_db_session")


def current_session() -> AsyncSession:
    """The session of the call being served. Only code running inside a call may use it."""
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError("no database session: called outside a gRPC call") from None


def bind_session(session: AsyncSession) -> object:
    return _current.set(session)


def unbind_session(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]
