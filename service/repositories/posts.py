"""Every SQL statement about posts. Posts always come back with their author, in one query."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from functools import cache, partial
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Select,
    Text,
    bindparam,
    case,
    delete,
    func,
    insert,
    null,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY

from service.db.models import Post, User
from service.domain.entities import NewPost, PostRecord, UserRecord, UserWithPosts
from service.domain.errors import user_not_found
from service.domain.paging import Cursor
from service.repositories.base import (
    BaseRepository,
    Columns,
    Query,
    Row,
    like_pattern,
    limit_clause,
    newest_first_after,
    update_parameters,
    versioned_update,
)
from service.repositories.users import USER, USER_COLUMNS

POST = Columns(PostRecord, Post, nested=("author",))
POST_COLUMNS = POST.columns
_CONTENT_AT = POST_COLUMNS.index(Post.content)

# A stream's buffer is bounded in bytes, not rows: the cursor prefetches STREAM_BATCH rows, in
# which a content longer than STREAM_INLINE_BYTES comes back as NULL and is read on its own
# when its turn comes. So a batch holds at most ~STREAM_BATCH x (2 KiB + title + author), about
# 2 MB, whether the posts are small or 100,000 characters long.
STREAM_BATCH = 500
STREAM_INLINE_BYTES = 2048

_NEWEST_FIRST = (Post.created_at.desc(), Post.id.desc())
# The text a post puts in a response (with its author's): a lower bound of its encoded size,
# which PostgreSQL reads from each value's header without detoasting it.
_TEXT_BYTES = (
    func.octet_length(Post.title)
    + func.octet_length(Post.content)
    + func.octet_length(User.email)
    + func.octet_length(User.username)
)
# The text of the rows before this one, newest first: rows are read while it is within the
# caller's budget, so one call holds at most a response's worth of rows, plus the one row that
# shows more follow, however large the posts and the page size.
_BYTES_BEFORE = (
    func.sum(_TEXT_BYTES).over(order_by=_NEWEST_FIRST, rows=(None, 0)) - _TEXT_BYTES
).label("bytes_before")


def post_from_row(row: Row, author: UserRecord | None = None) -> PostRecord:
    """A post from a row of POST_COLUMNS followed (unless `author` is given) by USER_COLUMNS."""
    return POST.read(row, author=author or USER.read(row, POST.width))


def _with_author() -> Select[Any]:
    statement: Select[Any] = select(*POST_COLUMNS, *USER_COLUMNS)
    return statement.join(User, User.id == Post.author_id)


def _filters(author_id: int | None, published: bool | None) -> dict[str, Any]:
    """The parameters of the filters `_filtered` adds."""
    params: dict[str, Any] = {}
    if author_id is not None:
        params["author_id"] = author_id
    if published is not None:
        params["published"] = published
    return params


def _filtered(statement: Select[Any], author_id: bool, published: bool) -> Select[Any]:
    if author_id:
        statement = statement.where(Post.author_id == bindparam("author_id"))
    if published:
        statement = statement.where(Post.published == bindparam("published"))
    return statement


# Rows travel as four arrays, so one statement (and one prepared plan) inserts two posts or a
# thousand. WITH ORDINALITY keeps each row's place in the request and the insert consumes the
# rows in that order, so identities follow request order whatever plan PostgreSQL picks.
# Rows whose author does not exist are skipped; the caller compares counts.
_NEW_POST_FIELDS = ["author_id", "title", "content", "published"]
_SOURCE = (
    func.unnest(
        bindparam("author_ids", type_=ARRAY(BigInteger)),
        bindparam("titles", type_=ARRAY(Text)),
        bindparam("contents", type_=ARRAY(Text)),
        bindparam("published", type_=ARRAY(Boolean)),
    )
    .table_valued("author_id", "title", "content", "published", with_ordinality="ord")
    .render_derived("src")
)
_CREATED = (
    insert(Post)
    .from_select(
        _NEW_POST_FIELDS,
        select(_SOURCE.c.author_id, _SOURCE.c.title, _SOURCE.c.content, _SOURCE.c.published)
        .where(select(User.id).where(User.id == _SOURCE.c.author_id).exists())
        .order_by(_SOURCE.c.ord),
    )
    .returning(*POST_COLUMNS)
    .cte("created")
)
_CREATE_MANY = Query(
    select(_CREATED, *USER_COLUMNS)
    .join(User, User.id == _CREATED.c.author_id)
    .order_by(_CREATED.c.id)  # identities were handed out in request order
)
# One post (CreatePost) as one row of parameters rather than arrays of one. PostgreSQL plans the
# array statement afresh at every execution (its generic plan, costed for 100 unnested rows,
# never wins over a custom one), which doubles its CPU for a single post: ~300 µs against
# ~560-750 µs (docs/benchmarks.md), and CreatePost waits on the database's share of the cores.
# Same rule: a post whose author does not exist is not inserted.
_ONE_ROW = select(
    *(bindparam(name, type_=getattr(Post, name).type) for name in _NEW_POST_FIELDS)
).where(select(User.id).where(User.id == bindparam("author_id")).exists())
_CREATED_ONE = (
    insert(Post).from_select(_NEW_POST_FIELDS, _ONE_ROW).returning(*POST_COLUMNS).cte("created")
)
_CREATE_ONE = Query(
    select(_CREATED_ONE, *USER_COLUMNS).join(User, User.id == _CREATED_ONE.c.author_id)
)
_BY_ID = Query(_with_author().where(Post.id == bindparam("row_id")))
_BY_IDS = Query(
    _with_author().where(Post.id == func.any(bindparam("row_ids", type_=ARRAY(BigInteger))))
)


def _within_budget(statement: Select[Any], limit: int | None) -> Select[Any]:
    """`statement`'s rows newest first, at most `limit` (None: :limit) of them, and only those
    that start within :max_bytes of text (the first row past the budget included)."""
    page = (
        statement.add_columns(_BYTES_BEFORE)
        .order_by(*_NEWEST_FIRST)
        .limit(limit_clause(limit))
        .subquery("page")
    )
    columns = list(page.c)[:-1]  # all but bytes_before
    return (
        select(*columns)
        .where(page.c.bytes_before <= bindparam("max_bytes"))
        .order_by(page.c.created_at.desc(), page.c.id.desc())
    )


# A user and their newest posts in one statement, so one snapshot: the posts come from a
# LATERAL subquery bounded like a ListPosts page; no post leaves one row of NULL post columns.
_NEWEST_POSTS = (
    select(*POST_COLUMNS, _BYTES_BEFORE)
    .where(Post.author_id == User.id)
    .order_by(*_NEWEST_FIRST)
    .limit(bindparam("limit"))
    .lateral("newest")
)
_USER_WITH_POSTS = Query(
    select(*USER_COLUMNS, *list(_NEWEST_POSTS.c)[:-1])
    .select_from(User)
    .outerjoin(_NEWEST_POSTS, _NEWEST_POSTS.c.bytes_before <= bindparam("max_bytes"))
    .where(User.id == bindparam("row_id"))
    .order_by(_NEWEST_POSTS.c.created_at.desc(), _NEWEST_POSTS.c.id.desc())
)
_EXISTS = Query(select(Post.id).where(Post.id == bindparam("row_id")))
_DELETE = Query(delete(Post).where(Post.id == bindparam("row_id")).returning(Post.id))


@cache
def _list_query(
    after: bool, author_id: bool, published: bool, query: bool, limit: int | None
) -> Query:
    """ListPosts for one combination of filters and written LIMIT (None: the parameter): a
    handful of shapes, each compiled once."""
    statement = _filtered(_with_author(), author_id, published)
    if after:
        statement = statement.where(
            newest_first_after(
                Post.created_at, Post.id, bindparam("after_created_at"), bindparam("after_id")
            )
        )
    if query:
        statement = statement.where(Post.title.ilike(bindparam("pattern"), escape="\\"))
    return Query(_within_budget(statement, limit))


@cache
def _update_query(fields: tuple[str, ...], conditional: bool) -> Query:
    """UpdatePost for one set of fields, optionally only at an expected version; with the author."""
    changed = versioned_update(Post, fields, conditional=conditional).returning(*POST_COLUMNS)
    cte = changed.cte("changed")
    return Query(select(cte, *USER_COLUMNS).join(User, User.id == cte.c.author_id))


@cache
def _stream_query(author_id: bool, published: bool) -> Query:
    inline = case(
        (func.octet_length(Post.content) <= STREAM_INLINE_BYTES, Post.content), else_=null()
    )
    columns = [inline if c is Post.content else c for c in POST_COLUMNS]
    statement: Select[Any] = select(*columns, *USER_COLUMNS).join(User, User.id == Post.author_id)
    return Query(
        _filtered(statement, author_id, published).order_by(Post.created_at.asc(), Post.id.asc())
    )


_CONTENT = Query(select(Post.content).where(Post.id == bindparam("row_id")))


class PostRepository(BaseRepository):
    async def create_many(self, posts: Sequence[NewPost]) -> list[PostRecord]:
        """Inserts every post in one statement; returns them in the order given.

        A post whose author does not exist is not inserted: the caller learns which author
        was missing, and the call's transaction is rolled back, so nothing is created.
        """
        if len(posts) == 1:
            (post,) = posts
            rows = await self._all(
                _CREATE_ONE,
                author_id=post.author_id,
                title=post.title,
                content=post.content,
                published=post.published,
            )
        else:
            rows = await self._all(
                _CREATE_MANY,
                author_ids=[p.author_id for p in posts],
                titles=[p.title for p in posts],
                contents=[p.content for p in posts],
                published=[p.published for p in posts],
            )
        created = [post_from_row(row) for row in rows]
        if len(created) != len(posts):
            missing = {p.author_id for p in posts} - {p.author_id for p in created}
            raise user_not_found(min(missing))
        return created

    async def get(self, post_id: int) -> PostRecord | None:
        row = await self._one(_BY_ID, row_id=post_id)
        return None if row is None else post_from_row(row)

    async def by_ids(self, post_ids: Sequence[int]) -> dict[int, PostRecord]:
        """The posts of `post_ids` that exist, by id, in one query."""
        rows = await self._all(_BY_IDS, row_ids=list(post_ids))
        return {post.id: post for post in map(post_from_row, rows)}

    async def list_newest_first(
        self,
        *,
        limit: int,
        max_bytes: int,
        after: Cursor | None,
        author_id: int | None,
        published: bool | None,
        query: str,
    ) -> list[PostRecord]:
        shape = partial(
            _list_query,
            after is not None,
            author_id is not None,
            published is not None,
            bool(query),
        )
        params: dict[str, Any] = {"max_bytes": max_bytes}
        if after is not None:
            params.update(after_created_at=after.created_at, after_id=after.id)
        if query:
            params["pattern"] = like_pattern(query)
        params.update(_filters(author_id, published))
        rows = await self._page(shape, limit, bool(query), **params)
        return [post_from_row(row) for row in rows]

    async def user_with_newest_posts(
        self, user_id: int, *, limit: int, max_bytes: int
    ) -> UserWithPosts | None:
        """The user and up to `limit` of their newest posts, newest first, those that start
        within `max_bytes` of text: one statement, so one snapshot."""
        rows = await self._all(_USER_WITH_POSTS, row_id=user_id, limit=limit, max_bytes=max_bytes)
        if not rows:
            return None
        user = USER.read(rows[0])
        posts = [
            POST.read(row, USER.width, author=user) for row in rows if row[USER.width] is not None
        ]
        return UserWithPosts(user, posts)

    async def update(
        self, post_id: int, values: dict[str, Any], *, expected_version: int | None
    ) -> PostRecord | None:
        """Applies `values`, bumping the version; None when the id or the version does not match."""
        statement = _update_query(tuple(sorted(values)), expected_version is not None)
        row = await self._one(statement, **update_parameters(post_id, values, expected_version))
        return None if row is None else post_from_row(row)

    async def exists(self, post_id: int) -> bool:
        return await self._one(_EXISTS, row_id=post_id) is not None

    async def delete(self, post_id: int) -> bool:
        return await self._one(_DELETE, row_id=post_id) is not None

    async def stream(
        self, *, author_id: int | None, published: bool | None
    ) -> AsyncIterator[PostRecord]:
        """Every matching post, oldest first, read STREAM_BATCH rows at a time as the caller
        consumes them, so memory stays flat however many rows match and however large."""
        statement = _stream_query(author_id is not None, published is not None)
        rows = self._stream(statement, STREAM_BATCH, **_filters(author_id, published))
        async for row in rows:
            post = post_from_row(row)
            if row[_CONTENT_AT] is None:  # too long to prefetch: read alone, in the same snapshot
                content = await self._one(_CONTENT, row_id=post.id)
                assert content is not None  # the snapshot still holds the row
                post = replace(post, content=content[0])
            yield post
