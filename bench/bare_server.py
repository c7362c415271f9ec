"""A bare grpc.aio server for UserService and PostService: the ratio baseline.

It answers every RPC with messages of the real service's shapes and sizes (a User with all its
fields, 50 Posts each with its author, a stream of posts...) built per call, and touches no
database. Same options as the service that matter for throughput: event loop (`--uvloop`) and
worker processes (`--workers`, all listening on one port with SO_REUSEPORT, forked before any
gRPC object exists), and methods served through one generic handler (service.methods;
`--registered-methods` serves them as the generated code does, for comparison).

    python -m bench.bare_server --port 50071 [--uvloop] [--workers 2] [--stream-rows 500000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import blog.v1.post_service_pb2 as post_pb
import blog.v1.post_service_pb2_grpc as post_grpc
import blog.v1.resources_pb2 as res_pb
import blog.v1.user_service_pb2 as user_pb
import blog.v1.user_service_pb2_grpc as user_grpc
import grpc
from google.protobuf.empty_pb2 import Empty
from google.protobuf.timestamp_pb2 import Timestamp

from bench import fakedata
from service.methods import MethodTable

_EPOCH = 1_600_000_000
WITH_POSTS = 20  # bench.seed.PROLIFIC_POSTS: posts of a GetUser WITH_POSTS answer


def _ts(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=123_000)


def _user(user_id: int) -> res_pb.User:
    return res_pb.User(
        id=user_id,
        email=fakedata.email(user_id),
        username=fakedata.username(user_id),
        is_active=True,
        is_superuser=False,
        created_at=_ts(_EPOCH + user_id * 900),
        etag="1",
    )


def _post(post_id: int) -> res_pb.Post:
    author_id = post_id % 100_000 + 1
    return res_pb.Post(
        id=post_id,
        author_id=author_id,
        title=fakedata.title(post_id),
        content=fakedata.content(post_id),
        published=post_id % 5 != 0,
        created_at=_ts(_EPOCH + post_id * 180),
        etag="1",
        author=_user(author_id),
    )


def _page_size(size: int) -> int:
    return 50 if size <= 0 else min(size, 1000)


class BareUsers(user_grpc.UserServiceServicer):
    """UserService answering from generated values."""

    async def CreateUser(self, request: Any, context: Any) -> res_pb.User:
        user = _user(1)
        user.email, user.username = request.email, request.username
        return user

    async def GetUser(self, request: Any, context: Any) -> res_pb.User:
        user = _user(request.id)
        if request.view == res_pb.USER_VIEW_WITH_POSTS:  # as many as the bench's authors have
            posts = [_post(request.id * WITH_POSTS + i) for i in range(WITH_POSTS)]
            for post in posts:
                post.author_id = request.id
                post.author.CopyFrom(_user(request.id))  # SPEC: every Post carries its author
            user.posts.extend(posts)
        return user

    async def GetUserByEmail(self, request: Any, context: Any) -> res_pb.User:
        user = _user(1)
        user.email = request.email
        return user

    async def ListUsers(self, request: Any, context: Any) -> user_pb.ListUsersResponse:
        size = _page_size(request.page_size)
        users = [_user(100_000 - i) for i in range(size)]
        return user_pb.ListUsersResponse(users=users, next_page_token="bare-token")

    async def UpdateUser(self, request: Any, context: Any) -> res_pb.User:
        user = _user(request.user.id)
        user.updated_at.CopyFrom(_ts(_EPOCH + 10**8))
        return user

    async def ChangePassword(self, request: Any, context: Any) -> Empty:
        return Empty()

    async def DeleteUser(self, request: Any, context: Any) -> Empty:
        return Empty()

    async def AuthenticateUser(self, request: Any, context: Any) -> res_pb.User:
        return _user(1)


class BarePosts(post_grpc.PostServiceServicer):
    """PostService answering from generated values."""

    def __init__(self, stream_rows: int) -> None:
        self._stream_rows = stream_rows

    async def CreatePost(self, request: Any, context: Any) -> res_pb.Post:
        post = _post(1)
        post.title, post.content = request.title, request.content
        return post

    async def GetPost(self, request: Any, context: Any) -> res_pb.Post:
        return _post(request.id)

    async def ListPosts(self, request: Any, context: Any) -> post_pb.ListPostsResponse:
        size = _page_size(request.page_size)
        posts = [_post(500_000 - i) for i in range(size)]
        return post_pb.ListPostsResponse(posts=posts, next_page_token="bare-token")

    async def UpdatePost(self, request: Any, context: Any) -> res_pb.Post:
        post = _post(request.post.id)
        if request.post.title:
            post.title = request.post.title
        post.updated_at.CopyFrom(_ts(_EPOCH + 10**8))
        return post

    async def DeletePost(self, request: Any, context: Any) -> Empty:
        return Empty()

    async def BatchCreatePosts(
        self, request: Any, context: Any
    ) -> post_pb.BatchCreatePostsResponse:
        return post_pb.BatchCreatePostsResponse(
            posts=[_post(i) for i in range(len(request.requests))]
        )

    async def StreamPosts(self, request: Any, context: Any) -> AsyncIterator[res_pb.Post]:
        for post_id in range(1, self._stream_rows + 1):
            yield _post(post_id)


async def serve(port: int, stream_rows: int, registered: bool) -> None:
    """Serves on 127.0.0.1:`port` until SIGTERM or SIGINT."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
    if registered:  # as the generated code does it, for comparison
        user_grpc.add_UserServiceServicer_to_server(BareUsers(), server)
        post_grpc.add_PostServiceServicer_to_server(BarePosts(stream_rows), server)
    else:  # as the service does it
        methods = MethodTable()
        methods.add(user_grpc.add_UserServiceServicer_to_server, BareUsers())
        methods.add(post_grpc.add_PostServiceServicer_to_server, BarePosts(stream_rows))
        server.add_generic_rpc_handlers((methods,))
    await serve_until_signalled(server, port)


async def serve_until_signalled(server: grpc.aio.Server, port: int) -> None:
    """Serves `server` on 127.0.0.1:`port` until SIGTERM or SIGINT."""
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=1)


def _run(coro: Coroutine[Any, Any, None], use_uvloop: bool) -> None:
    if use_uvloop:
        import uvloop

        uvloop.run(coro)
    else:
        asyncio.run(coro)


def _fork_workers(count: int) -> list[int]:
    """Forks `count - 1` children; returns their pids in the parent, [] in a child."""
    children: list[int] = []
    for _ in range(count - 1):
        pid = os.fork()
        if pid == 0:
            return []
        children.append(pid)
    return children


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_server", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    parser.add_argument("--workers", type=int, default=1, help="processes on the port")
    parser.add_argument("--stream-rows", type=int, default=500_000, help="posts per StreamPosts")
    parser.add_argument(
        "--registered-methods",
        action="store_true",
        help="register each method with grpc.aio, as the generated add_*_to_server does",
    )
    args = parser.parse_args(argv)
    children = _fork_workers(max(1, args.workers))
    try:
        _run(serve(args.port, args.stream_rows, args.registered_methods), args.uvloop)
    finally:
        for pid in children:
            os.kill(pid, signal.SIGTERM)
        for pid in children:
            os.waitpid(pid, 0)
    sys.exit(0)


if __name__ == "__main__":
    main()
