"""Every SQL statement about posts. Posts always come back with their author, in one query."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    BindParameter,
    Boolean,
    Row,
    Text,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY

from service.db.models import Post, User
from service.domain.entities import NewPost, PostRecord, UserRecord
from service.domain.errors import user_not_found
from service.domain.paging import Cursor
from service.repositories.base import BaseRepository, contains_ignoring_case, newest_first_after
from service.repositories.users import USER_COLUMNS, user_from_row

POST_COLUMNS = (
    Post.id,
    Post.author_id,
    Post.title,
    Post.content,
    Post.published,
    Post.created_at,
    Post.updated_at,
    Post.version,
)
_WIDTH = len(POST_COLUMNS)
STREAM_BATCH = 500


def post_from_row(row: Row[Any], author: UserRecord | None = None) -> PostRecord:
    """A post from a row of POST_COLUMNS followed (unless `author` is given) by USER_COLUMNS."""
    return PostRecord(*row[:_WIDTH], author=author or user_from_row(row, _WIDTH))


def _with_author(*where: Any) -> Any:
    return select(*POST_COLUMNS, *USER_COLUMNS).join(User, User.id == Post.author_id).where(*where)


class PostRepository(BaseRepository):
    async def create_many(self, rows: Sequence[NewPost]) -> list[PostRecord]:
        """Inserts every row in one statement and returns the posts in the order given.

        The rows travel as four arrays, so the statement (and its prepared plan) is the same
        for one post or a thousand. Rows whose author does not exist are not inserted; the
        caller learns which author was missing and the call's transaction is rolled back.
        """
        source = select(
            func.unnest(_array([r.author_id for r in rows], BigInteger)).label("author_id"),
            func.unnest(_array([r.title for r in rows], Text)).label("title"),
            func.unnest(_array([r.content for r in rows], Text)).label("content"),
            func.unnest(_array([r.published for r in rows], Boolean)).label("published"),
        ).subquery("src")
        created = (
            insert(Post)
            .from_select(
                ["author_id", "title", "content", "published"],
                select(source).join(User, User.id == source.c.author_id),
            )
            .returning(*POST_COLUMNS)
            .cte("created")
        )
        statement = (
            select(created, *USER_COLUMNS)
            .join(User, User.id == created.c.author_id)
            .order_by(created.c.id)  # identities are handed out in insertion order
        )
        posts = [post_from_row(row) for row in await self._all(statement)]
        if len(posts) != len(rows):
            missing = {r.author_id for r in rows} - {p.author_id for p in posts}
            raise user_not_found(min(missing))
        return posts

    async def get(self, post_id: int) -> PostRecord | None:
        row = await self._one(_with_author(Post.id == post_id))
        return None if row is None else post_from_row(row)

    async def list(
        self,
        *,
        limit: int,
        after: Cursor | None,
        author_id: int | None,
        published: bool | None,
        query: str,
    ) -> list[PostRecord]:
        statement = _with_author(*newest_first_after(Post.created_at, Post.id, after))
        if author_id is not None:
            statement = statement.where(Post.author_id == author_id)
        if published is not None:
            statement = statement.where(Post.published == published)
        if query:
            statement = statement.where(contains_ignoring_case(Post.title, query))
        statement = statement.order_by(Post.created_at.desc(), Post.id.desc()).limit(limit)
        return [post_from_row(row) for row in await self._all(statement)]

    async def by_author(self, author: UserRecord) -> list[PostRecord]:
        """All of one user's posts, newest first, in one query."""
        rows = await self._all(
            select(*POST_COLUMNS)
            .where(Post.author_id == author.id)
            .order_by(Post.created_at.desc(), Post.id.desc())
        )
        return [post_from_row(row, author) for row in rows]

    async def update(
        self, post_id: int, values: dict[str, Any], *, expected_version: int | None
    ) -> PostRecord | None:
        """Applies `values`, bumping the version; None when the id or the version does not match."""
        changed = (
            update(Post)
            .where(Post.id == post_id)
            .values(**values, version=Post.version + 1, updated_at=func.now())
            .returning(*POST_COLUMNS)
        )
        if expected_version is not None:
            changed = changed.where(Post.version == expected_version)
        cte = changed.cte("changed")
        row = await self._one(select(cte, *USER_COLUMNS).join(User, User.id == cte.c.author_id))
        return None if row is None else post_from_row(row)

    async def exists(self, post_id: int) -> bool:
        return bool(await self._scalar(select(Post.id).where(Post.id == post_id)))

    async def delete(self, post_id: int) -> bool:
        row = await self._one(delete(Post).where(Post.id == post_id).returning(Post.id))
        return row is not None

    async def stream(
        self, *, author_id: int | None, published: bool | None
    ) -> AsyncIterator[PostRecord]:
        """Every matching post, oldest first, from a server-side cursor.

        Rows are fetched STREAM_BATCH at a time, only as fast as the caller consumes them,
        so memory stays flat however many rows match. A cursor needs a transaction, so this
        call's read-only connection runs one (REPEATABLE READ: one snapshot for the stream).
        """
        statement = _with_author()
        if author_id is not None:
            statement = statement.where(Post.author_id == author_id)
        if published is not None:
            statement = statement.where(Post.published == published)
        statement = statement.order_by(Post.created_at.asc(), Post.id.asc())
        await self.session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        result = await self.session.stream(
            statement, execution_options={"yield_per": STREAM_BATCH}
        )
        async for row in result:
            yield post_from_row(row)


def _array(values: list[Any], item_type: Any) -> BindParameter[Any]:
    return bindparam(None, values, type_=ARRAY(item_type))
