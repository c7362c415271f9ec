"""What requests are built from, read through the API: a data sample and a deep page token.

When the benchmark seeds the database itself, `bench.seed` returns the sample. Against a server
it did not start and without a database URL, `from_api` reads one from the service's first
pages instead. `deep_token` walks ListPosts in pages of 1000 to the page after row N.
"""

from __future__ import annotations

import blog.v1.post_service_pb2 as post_pb
import blog.v1.user_service_pb2 as user_pb
import grpc

from bench.seed import Dataset

_LIST_USERS = "/blog.v1.UserService/ListUsers"
_LIST_POSTS = "/blog.v1.PostService/ListPosts"
_OPTIONS = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]


def from_api(target: str) -> Dataset:
    """A sample of the newest 1000 users and posts, as the service lists them."""
    with grpc.insecure_channel(target, options=_OPTIONS) as channel:
        users = user_pb.ListUsersResponse.FromString(
            channel.unary_unary(_LIST_USERS, None, None)(
                user_pb.ListUsersRequest(page_size=1000).SerializeToString(), timeout=60
            )
        ).users
        posts = post_pb.ListPostsResponse.FromString(
            channel.unary_unary(_LIST_POSTS, None, None)(
                post_pb.ListPostsRequest(page_size=1000).SerializeToString(), timeout=60
            )
        ).posts
    return Dataset(
        users=len(users),
        posts=len(posts),
        sample_users=[(u.id, u.email, u.username) for u in users if u.is_active][::4],
        sample_posts=[p.id for p in posts][::4],
    )


def deep_token(target: str, rows: int = 100_000, page: int = 1000) -> str:
    """The next_page_token after the newest `rows` posts, walked `page` posts at a time."""
    token = ""
    with grpc.insecure_channel(target, options=_OPTIONS) as channel:
        call = channel.unary_unary(_LIST_POSTS, None, None)
        for _ in range(rows // page):
            request = post_pb.ListPostsRequest(page_size=page, page_token=token)
            reply = post_pb.ListPostsResponse.FromString(
                call(request.SerializeToString(), timeout=60)
            )
            token = reply.next_page_token
            if not token:
                raise RuntimeError(f"ListPosts ended before {rows} rows")
    return token
