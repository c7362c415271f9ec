"""Seeds the benchmark data set with asyncpg COPY, or reuses it when already there.

At least 100,000 users and 500,000 posts (tables created by the service's migrations). Seeded
users share one Argon2id hash of "bench-password" (see `password_hash`) so AuthenticateUser
can be measured; rows get
distinct created_at values spread over three years; ids are explicit (then the identity
sequences are moved past them). Only the missing rows are added; VACUUM ANALYZE runs after.
Returns a `Dataset`: a random sample of real ids, e-mails and usernames to build requests from.
`PROLIFIC` authors have exactly `PROLIFIC_POSTS` posts (GetUser WITH_POSTS): random authorship
gives ~5 posts a user and almost nobody 20, so the seed tops up that many users to 20 posts.

    python -m bench.seed [--database-url postgresql+asyncpg://postgres@127.0.0.1/bench]

Without --database-url it seeds DATABASE_URL, else the database of a running `make run`
(its embedded PostgreSQL), so that bench/ghz/*.json find the rows they ask for.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg  # type: ignore[import-untyped, unused-ignore]

from bench import fakedata

PASSWORD = "bench-password"
USERS, POSTS = 100_000, 500_000
PROLIFIC, PROLIFIC_POSTS = 64, 20
SPAN = timedelta(days=3 * 365)
_USER_COLUMNS = ["id", "email", "username", "hashed_password", "is_active", "created_at"]
_POST_COLUMNS = ["id", "author_id", "title", "content", "published", "created_at"]


@dataclass(frozen=True)
class Dataset:
    """Counts and a random sample of seeded rows: (id, email, username) users, post ids."""

    users: int
    posts: int
    sample_users: list[tuple[int, str, str]]
    sample_posts: list[int]
    prolific_users: list[int] = field(default_factory=list)  # authors of PROLIFIC_POSTS posts


def asyncpg_dsn(url: str) -> str:
    """A SQLAlchemy URL (postgresql+asyncpg://...) as a DSN asyncpg accepts."""
    scheme, sep, rest = url.partition("://")
    return ("postgresql" + sep + rest) if "+" in scheme else url


def _times(count: int, rng: random.Random) -> list[datetime]:
    """`count` distinct, increasing timestamps spread over SPAN and ending a day ago."""
    start = datetime.now(UTC) - SPAN - timedelta(days=1)
    step = SPAN.total_seconds() * 1_000_000 // count
    return [
        start + timedelta(microseconds=i * step + rng.randrange(int(step))) for i in range(count)
    ]


def password_hash() -> str:
    """An Argon2id hash of PASSWORD with the service's cost settings (ARGON2_* env or defaults).

    With other parameters the service would rehash (and write) on every first login, so the
    seed uses its own; argon2-cffi's defaults only when the service's settings cannot be read.
    """
    from argon2 import PasswordHasher

    try:
        from service.settings import Settings
    except ImportError:
        return PasswordHasher().hash(PASSWORD)
    fields = Settings.model_fields

    def setting(name: str) -> int:
        alias = fields[name].alias or name.upper()
        return int(os.environ.get(alias, fields[name].default))

    hasher = PasswordHasher(
        time_cost=setting("argon2_time_cost"),
        memory_cost=setting("argon2_memory_kib"),
        parallelism=setting("argon2_parallelism"),
    )
    return hasher.hash(PASSWORD)


async def _add_users(conn: asyncpg.Connection, count: int, rng: random.Random) -> None:
    hashed = password_hash()
    first = int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM users")) + 1
    rows = [
        (n, fakedata.email(n), fakedata.username(n), hashed, True, created)
        for n, created in zip(range(first, first + count), _times(count, rng), strict=True)
    ]
    await conn.copy_records_to_table("users", records=rows, columns=_USER_COLUMNS)
    await conn.execute("SELECT setval(pg_get_serial_sequence('users', 'id'), max(id)) FROM users")


async def _add_posts(conn: asyncpg.Connection, count: int, rng: random.Random) -> None:
    authors = [r[0] for r in await conn.fetch("SELECT id FROM users")]
    first = int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM posts")) + 1
    rows = [
        (n, rng.choice(authors), fakedata.title(n), fakedata.content(n), n % 5 != 0, created)
        for n, created in zip(range(first, first + count), _times(count, rng), strict=True)
    ]
    await conn.copy_records_to_table("posts", records=rows, columns=_POST_COLUMNS)
    await conn.execute("SELECT setval(pg_get_serial_sequence('posts', 'id'), max(id)) FROM posts")


async def _add_prolific(conn: asyncpg.Connection, rng: random.Random) -> None:
    """Tops up users of fewer than PROLIFIC_POSTS posts until PROLIFIC have exactly that many."""
    have = await _prolific(conn)
    missing = PROLIFIC - len(have)
    if missing <= 0:
        return
    short = await conn.fetch(
        "SELECT u.id, count(p.id) AS n FROM users u LEFT JOIN posts p ON p.author_id = u.id "
        "WHERE u.email LIKE $1 GROUP BY u.id HAVING count(p.id) < $2 ORDER BY u.id LIMIT $3",
        f"%@{fakedata.EMAIL_DOMAIN}",
        PROLIFIC_POSTS,
        missing,
    )
    first = int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM posts")) + 1
    authors = [r["id"] for r in short for _ in range(PROLIFIC_POSTS - r["n"])]
    rows = [
        (n, author, fakedata.title(n), fakedata.content(n), True, created)
        for n, author, created in zip(
            range(first, first + len(authors)), authors, _times(len(authors), rng), strict=True
        )
    ]
    await conn.copy_records_to_table("posts", records=rows, columns=_POST_COLUMNS)
    await conn.execute("SELECT setval(pg_get_serial_sequence('posts', 'id'), max(id)) FROM posts")


async def _prolific(conn: asyncpg.Connection) -> list[int]:
    rows = await conn.fetch(
        "SELECT author_id FROM posts GROUP BY author_id HAVING count(*) = $1 "
        "ORDER BY author_id LIMIT $2",
        PROLIFIC_POSTS,
        PROLIFIC,
    )
    return [r["author_id"] for r in rows]


async def seed(url: str, users: int = USERS, posts: int = POSTS, log: bool = True) -> Dataset:
    """Brings the database at `url` to at least `users` users and `posts` posts."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rng, began = random.Random(1), time.monotonic()
        have_users = int(await conn.fetchval("SELECT count(*) FROM users"))
        have_posts = int(await conn.fetchval("SELECT count(*) FROM posts"))
        if have_users >= users and have_posts >= posts:
            if log:
                print(f"seed: reusing {have_users} users and {have_posts} posts")
            if len(await _prolific(conn)) < PROLIFIC:  # a data set seeded before they existed
                await _add_prolific(conn, rng)
                await conn.execute("VACUUM ANALYZE posts")
        else:
            async with conn.transaction():
                # GIN (trigram) indexes absorb a bulk load faster through a larger pending list
                await conn.execute("SET LOCAL gin_pending_list_limit = '256MB'")
                await conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
                if have_users < users:
                    await _add_users(conn, users - have_users, rng)
                if have_posts < posts:
                    await _add_posts(conn, posts - have_posts, rng)
                await _add_prolific(conn, rng)
            # VACUUM also flushes the GIN pending lists and sets the visibility map
            await conn.execute("VACUUM ANALYZE users")
            await conn.execute("VACUUM ANALYZE posts")
            # Write the load's dirty pages out now, not in a checkpoint during the first runs.
            with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
                await conn.execute("CHECKPOINT")
            if log:
                added = f"{max(0, users - have_users)} users, {max(0, posts - have_posts)} posts"
                print(f"seed: added {added} in {time.monotonic() - began:.1f} s")
        return await _sample(conn)
    finally:
        await conn.close()


async def _sample(conn: asyncpg.Connection, size: int = 256) -> Dataset:
    pattern = f"%@{fakedata.EMAIL_DOMAIN}"
    users = await conn.fetch(
        "SELECT id, email, username FROM users WHERE is_active AND email LIKE $1 "
        "ORDER BY random() LIMIT $2",
        pattern,
        size,
    )
    posts = await conn.fetch("SELECT id FROM posts ORDER BY random() LIMIT $1", size)
    return Dataset(
        users=int(await conn.fetchval("SELECT count(*) FROM users")),
        posts=int(await conn.fetchval("SELECT count(*) FROM posts")),
        sample_users=[(r["id"], r["email"], r["username"]) for r in users],
        sample_posts=[r["id"] for r in posts],
        prolific_users=await _prolific(conn),
    )


def _make_run_url() -> str:
    """The database `make run` serves from when DATABASE_URL is unset (it must be running)."""
    import importlib

    devserver = importlib.import_module("devtools.devserver")
    embedded = importlib.import_module("devtools.embedded")
    return str(embedded.EmbeddedPostgres(devserver.DATA_DIR.resolve()).url(devserver.DATABASE))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.seed", description=__doc__)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--users", type=int, default=USERS)
    parser.add_argument("--posts", type=int, default=POSTS)
    args = parser.parse_args(argv)
    url = args.database_url or _make_run_url()
    data = asyncio.run(seed(url, args.users, args.posts))
    print(f"seed: {data.users} users, {data.posts} posts")


if __name__ == "__main__":
    main()
