"""blog.v1.PostService: validates requests, calls the post use cases, builds responses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from blog.v1 import post_service_pb2, post_service_pb2_grpc, resources_pb2
from google.protobuf import empty_pb2
from grpc import aio

from service.domain import validation as check
from service.domain.entities import NewPost, PostRecord, updatable
from service.domain.posts import Posts
from service.servicers.convert import post_message, post_size_bound, update_values
from service.servicers.sizing import (
    CLIENT_RECEIVE_LIMIT,
    TOKEN_ROOM,
    fitting,
)

Context = aio.ServicerContext[Any, Any]
POST_FIELDS = updatable(PostRecord)  # UpdatePost's mask paths


def _new_post(
    v: check.Violations, prefix: str, request: post_service_pb2.CreatePostRequest
) -> NewPost:
    check.resource_id(v, f"{prefix}author_id", request.author_id)
    check.title(v, f"{prefix}title", request.title)
    check.content(v, f"{prefix}content", request.content)
    return NewPost(request.author_id, request.title, request.content, request.published)


class PostServicer(post_service_pb2_grpc.PostServiceServicer):
    def __init__(self, posts: Posts, max_response_bytes: int = CLIENT_RECEIVE_LIMIT) -> None:
        self._posts = posts
        self._max_response_bytes = max_response_bytes

    async def CreatePost(
        self, request: post_service_pb2.CreatePostRequest, context: Context
    ) -> resources_pb2.Post:
        with check.Violations() as v:
            post = _new_post(v, "", request)
            request_id = check.request_id(v, "request_id", request.request_id)
        return post_message(await self._posts.create(post, request_id))

    async def GetPost(
        self, request: post_service_pb2.GetPostRequest, context: Context
    ) -> resources_pb2.Post:
        with check.Violations() as v:
            check.resource_id(v, "id", request.id)
        return post_message(await self._posts.get(request.id))

    async def ListPosts(
        self, request: post_service_pb2.ListPostsRequest, context: Context
    ) -> post_service_pb2.ListPostsResponse:
        with check.Violations() as v:
            page_size = check.page_size(v, "page_size", request.page_size)
            check.search_query(v, "query", request.query)
            check.token(v, "page_token", request.page_token)
            if request.HasField("author_id"):
                check.resource_id(v, "author_id", request.author_id)
        budget = self._max_response_bytes - TOKEN_ROOM
        page = await self._posts.list(
            page_size=page_size,
            max_bytes=budget,
            page_token=request.page_token,
            author_id=request.author_id if request.HasField("author_id") else None,
            published=request.published if request.HasField("published") else None,
            query=request.query,
        )
        page = page.first(fitting(page.items, post_size_bound, budget))
        return post_service_pb2.ListPostsResponse(
            posts=[post_message(p) for p in page.items], next_page_token=page.next_page_token
        )

    async def UpdatePost(
        self, request: post_service_pb2.UpdatePostRequest, context: Context
    ) -> resources_pb2.Post:
        post = request.post
        values = update_values(request, "post", POST_FIELDS, check.POST_RULES)
        return post_message(await self._posts.update(post.id, values, post.etag))

    async def DeletePost(
        self, request: post_service_pb2.DeletePostRequest, context: Context
    ) -> empty_pb2.Empty:
        with check.Violations() as v:
            check.resource_id(v, "id", request.id)
        await self._posts.delete(request.id)
        return empty_pb2.Empty()

    async def BatchCreatePosts(
        self, request: post_service_pb2.BatchCreatePostsRequest, context: Context
    ) -> post_service_pb2.BatchCreatePostsResponse:
        with check.Violations() as v:
            count = len(request.requests)
            v.check(
                1 <= count <= check.BATCH_MAX,
                "requests",
                f"must hold 1 to {check.BATCH_MAX} posts, not {count}",
            )
            # Items of an oversized batch are not worth checking one by one.
            items = request.requests if count <= check.BATCH_MAX else []
            posts = [_new_post(v, f"requests[{i}].", r) for i, r in enumerate(items)]
            for i, item in enumerate(items):
                v.check(
                    not item.request_id,
                    f"requests[{i}].request_id",
                    "must be empty: the batch's own request_id covers all of its posts",
                )
            request_id = check.request_id(v, "request_id", request.request_id)
        created = await self._posts.create_many(posts, request_id)
        # A response over the client's limit (a request just under it answers with more: ids,
        # etags, authors) is refused before COMMIT (interceptors.responses).
        return post_service_pb2.BatchCreatePostsResponse(posts=[post_message(p) for p in created])

    async def StreamPosts(
        self, request: post_service_pb2.StreamPostsRequest, context: Context
    ) -> AsyncIterator[resources_pb2.Post]:
        with check.Violations() as v:
            if request.HasField("author_id"):
                check.resource_id(v, "author_id", request.author_id)
        async for post in self._posts.stream(
            author_id=request.author_id if request.HasField("author_id") else None,
            published=request.published if request.HasField("published") else None,
        ):
            yield post_message(post)
