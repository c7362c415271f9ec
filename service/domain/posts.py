"""Post use cases: the rules between a validated request and the repositories."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from service.domain.entities import NewPost, Page, PostRecord
from service.domain.errors import post_not_found
from service.domain.paging import PageTokens
from service.domain.updates import update_if_current
from service.repositories.posts import PostRepository


class Posts:
    def __init__(self, tokens: PageTokens) -> None:
        self._posts = PostRepository()
        self._tokens = tokens

    async def create(self, post: NewPost) -> PostRecord:
        (created,) = await self._posts.create_many([post])
        return created

    async def create_many(self, posts: Sequence[NewPost]) -> list[PostRecord]:
        return await self._posts.create_many(posts)

    async def get(self, post_id: int) -> PostRecord:
        post = await self._posts.get(post_id)
        if post is None:
            raise post_not_found(post_id)
        return post

    async def list(
        self,
        *,
        page_size: int,
        max_bytes: int,
        page_token: str,
        author_id: int | None,
        published: bool | None,
        query: str,
    ) -> Page[PostRecord]:
        """A page of posts, newest first, read only as far as the rows that start within
        `max_bytes` of text (so a call holds about one response's worth of rows, whatever the
        page size); the caller cuts it to what fits in its response (`Page.first`)."""
        filters: dict[str, object] = {
            "author_id": author_id,
            "published": published,
            "query": query,
        }
        after = self._tokens.parse(page_token, "posts", filters)
        rows = await self._posts.list_newest_first(
            limit=page_size + 1,
            max_bytes=max_bytes,
            after=after,
            author_id=author_id,
            published=published,
            query=query,
        )
        return self._tokens.page("posts", filters, rows, page_size)

    async def update(self, post_id: int, values: dict[str, Any], etag: str) -> PostRecord:
        return await update_if_current(self._posts, "post", post_id, values, etag, post_not_found)

    async def delete(self, post_id: int) -> None:
        if not await self._posts.delete(post_id):
            raise post_not_found(post_id)

    def stream(self, *, author_id: int | None, published: bool | None) -> AsyncIterator[PostRecord]:
        return self._posts.stream(author_id=author_id, published=published)
