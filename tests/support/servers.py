"""The service in the test's own process: its settings, and a server started on a real port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from service.server import Server
from service.settings import Settings

# Cheap Argon2 for tests; the production default is OWASP's minimum (19 MiB, t=2).
FAST_ARGON2 = {"ARGON2_MEMORY_KIB": "1024", "ARGON2_TIME_COST": "1"}


def make_settings(database_url: str, **overrides: object) -> Settings:
    """The service's settings for `database_url`: any free port, cheap Argon2, `overrides`."""
    env: dict[str, object] = {
        "DATABASE_URL": database_url,
        "GRPC_PORT": 0,
        **{k: int(v) for k, v in FAST_ARGON2.items()},
    }
    env.update(overrides)
    return Settings(_env_file=None, **env)  # type: ignore[arg-type]


async def started_server(database_url: str, **overrides: object) -> Server:
    """A server of our own, serving; the caller stops it."""
    server = Server(make_settings(database_url, **overrides))
    await server.start()
    return server


@asynccontextmanager
async def serving(database_url: str, **overrides: object) -> AsyncIterator[Server]:
    """A server of our own, serving for as long as the block lasts."""
    server = await started_server(database_url, **overrides)
    try:
        yield server
    finally:
        await server.stop()
