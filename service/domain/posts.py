"""Post use cases: the rules between a validated request and the repositories."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Any

from blog.v1.error_reason_pb2 import ErrorReason

from service.domain.entities import NewPost, Page, PostRecord
from service.domain.errors import AlreadyExists, NotFound, post_not_found
from service.domain.paging import PageTokens
from service.domain.ports import CommitsAlone, PostRows, RequestIds
from service.domain.updates import update_if_current

# How long a request_id is remembered (AIP-155; SPEC: at least 24 hours).
REQUEST_ID_KEPT = timedelta(hours=24)


def _fingerprint(kind: str, posts: Sequence[NewPost]) -> bytes:
    """What a request asked for, so that a request_id reused for another request shows."""
    asked = [kind, [[p.author_id, p.title, p.content, p.published] for p in posts]]
    return hashlib.sha256(json.dumps(asked, ensure_ascii=False).encode()).digest()


class Posts:
    def __init__(
        self,
        *,
        posts: PostRows,
        requests: RequestIds,
        commits_alone: CommitsAlone,
        tokens: PageTokens,
    ) -> None:
        self._posts = posts
        self._requests = requests
        self._commits_alone = commits_alone
        self._tokens = tokens

    async def create(self, post: NewPost, request_id: uuid.UUID | None = None) -> PostRecord:
        (created,) = await self._create("CreatePost", [post], request_id)
        return created

    async def create_many(
        self, posts: Sequence[NewPost], request_id: uuid.UUID | None = None
    ) -> list[PostRecord]:
        return await self._create("BatchCreatePosts", posts, request_id)

    async def _create(
        self, kind: str, posts: Sequence[NewPost], request_id: uuid.UUID | None
    ) -> list[PostRecord]:
        """Creates the posts; with a request_id, at most once per id (AIP-155).

        The id is claimed in the call's transaction before anything is created, so concurrent
        calls with one id create the posts once: the others wait for the first to commit and
        then return what it created. If the first fails, nothing of it stays, the id included.
        """
        if request_id is None:
            if len(posts) == 1:
                # One post is inserted or not; several must all be or none (PostRows.create_many).
                self._commits_alone()
            return await self._posts.create_many(posts)  # no statement more than without ids
        fingerprint = _fingerprint(kind, posts)
        if await self._requests.claim(request_id, fingerprint, REQUEST_ID_KEPT):
            created = await self._posts.create_many(posts)
            await self._requests.remember(request_id, [p.id for p in created])
            return created
        first = await self._requests.recall(request_id)
        if first.fingerprint != fingerprint:
            raise AlreadyExists(
                f"request_id {request_id} was already used for a different request; send a new"
                " request_id for a new request",
                reason=ErrorReason.REQUEST_ID_REUSED,
            )
        found = await self._posts.by_ids(first.post_ids)
        missing = [post_id for post_id in first.post_ids if post_id not in found]
        if missing:
            raise NotFound(
                f"post {missing[0]}, created by an earlier call with request_id {request_id},"
                " has been deleted since",
                reason=ErrorReason.POST_NOT_FOUND,
            )
        return [found[post_id] for post_id in first.post_ids]

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
        return await update_if_current(
            self._posts, "post", post_id, values, etag, post_not_found, self._commits_alone
        )

    async def delete(self, post_id: int) -> None:
        self._commits_alone()
        if not await self._posts.delete(post_id):
            raise post_not_found(post_id)

    def stream(self, *, author_id: int | None, published: bool | None) -> AsyncIterator[PostRecord]:
        return self._posts.stream(author_id=author_id, published=published)
