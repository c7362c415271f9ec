"""The benchmark's scenarios: which requests each sends, built from a sample of seeded rows.

Each unary scenario holds several distinct requests (ids, e-mails, queries from the sample), so
h2load runs one process per request and the Python client rotates through them. `kind` says how
the final verdicts read a scenario; `shape` names the bare-server run it is compared with
(scenarios whose requests look alike to a server without data share one bare run).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import blog.v1.post_service_pb2 as post_pb
import blog.v1.resources_pb2 as res_pb
import blog.v1.user_service_pb2 as user_pb
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message

from bench import fakedata
from bench.model import Call, Workload
from bench.seed import PASSWORD, Dataset

USERS = "/blog.v1.UserService/"
POSTS = "/blog.v1.PostService/"


@dataclass(frozen=True)
class Scenario:
    """A workload plus how to read it."""

    workload: Workload
    kind: str  # read | write | mix | auth | stream
    shape: str

    @property
    def name(self) -> str:
        return self.workload.name


def _calls(method: str, messages: Sequence[Message], weight: float = 1.0) -> tuple[Call, ...]:
    return tuple(Call(method, m.SerializeToString(), weight) for m in messages)


def get_user(
    data: Dataset, k: int, view: res_pb.UserView.ValueType = res_pb.USER_VIEW_UNSPECIFIED
) -> tuple[Call, ...]:
    msgs = [user_pb.GetUserRequest(id=u[0], view=view) for u in data.sample_users[:k]]
    return _calls(USERS + "GetUser", msgs)


def get_user_with_posts(data: Dataset, k: int) -> tuple[Call, ...]:
    """GetUser WITH_POSTS of authors of exactly PROLIFIC_POSTS posts (one user, 20 posts)."""
    msgs = [
        user_pb.GetUserRequest(id=uid, view=res_pb.USER_VIEW_WITH_POSTS)
        for uid in data.prolific_users[:k]
    ]
    return _calls(USERS + "GetUser", msgs)


def get_user_by_email(data: Dataset, k: int) -> tuple[Call, ...]:
    msgs = [user_pb.GetUserByEmailRequest(email=u[1]) for u in data.sample_users[:k]]
    return _calls(USERS + "GetUserByEmail", msgs)


def list_users(query: str = "", page_size: int = 50) -> tuple[Call, ...]:
    msgs = [user_pb.ListUsersRequest(page_size=page_size, query=query)]
    return _calls(USERS + "ListUsers", msgs)


def list_posts(token: str = "", page_size: int = 50) -> tuple[Call, ...]:
    msgs = [post_pb.ListPostsRequest(page_size=page_size, page_token=token)]
    return _calls(POSTS + "ListPosts", msgs)


def create_post(data: Dataset, k: int) -> tuple[Call, ...]:
    msgs = [
        post_pb.CreatePostRequest(
            author_id=u[0], title=f"Bench post {i}", content=fakedata.content(i), published=True
        )
        for i, u in enumerate(data.sample_users[:k])
    ]
    return _calls(POSTS + "CreatePost", msgs)


def batch_create_posts(data: Dataset, k: int, size: int = 100) -> tuple[Call, ...]:
    """BatchCreatePosts of `size` posts by one author each, no request_id (every call creates)."""
    msgs = [
        post_pb.BatchCreatePostsRequest(
            requests=[
                post_pb.CreatePostRequest(
                    author_id=u[0],
                    title=f"Bench batch post {i}.{j}",
                    content=fakedata.content(i * size + j),
                    published=True,
                )
                for j in range(size)
            ]
        )
        for i, u in enumerate(data.sample_users[:k])
    ]
    return _calls(POSTS + "BatchCreatePosts", msgs)


def update_post(data: Dataset, k: int) -> tuple[Call, ...]:
    msgs = [
        post_pb.UpdatePostRequest(
            post=res_pb.Post(id=pid, title=f"Updated title {pid}"),
            update_mask=FieldMask(paths=["title"]),
        )
        for pid in data.sample_posts[:k]
    ]
    return _calls(POSTS + "UpdatePost", msgs)


def authenticate(data: Dataset, k: int, password: str = PASSWORD) -> tuple[Call, ...]:
    """Logins by e-mail and by username in turn (a wrong `password` fails every one)."""
    msgs = [
        user_pb.AuthenticateUserRequest(login=u[1] if i % 2 else u[2], password=password)
        for i, u in enumerate(data.sample_users[:k])
    ]
    return _calls(USERS + "AuthenticateUser", msgs)


def mix(data: Dataset) -> tuple[Call, ...]:
    """80 % reads, 20 % writes, by call count."""
    parts = [
        (get_user(data, 64), 40.0),
        (get_user_by_email(data, 64), 10.0),
        (list_users(), 10.0),
        (list_posts(), 20.0),
        (create_post(data, 64), 10.0),
        (update_post(data, 64), 10.0),
    ]
    return tuple(replace(c, weight=w / len(calls)) for calls, w in parts for c in calls)


def stream_posts() -> tuple[Call, ...]:
    return _calls(POSTS + "StreamPosts", [post_pb.StreamPostsRequest()])


FLEET_CONCURRENCY, FLEET_CONNECTIONS = 256, 64
FLEET = f" @{FLEET_CONCURRENCY}/{FLEET_CONNECTIONS}"


def _reads(data: Dataset, conns: int, deep_token: str) -> list[tuple[str, tuple[Call, ...]]]:
    """The read scenarios' (name, calls), with `conns` distinct requests where there are many."""
    query = fakedata.FIRST_NAMES[7]
    return [
        ("GetUser", get_user(data, conns)),
        ("GetUser WITH_POSTS", get_user_with_posts(data, conns)),
        ("GetUserByEmail", get_user_by_email(data, conns)),
        ("ListUsers", list_users()),
        ("ListPosts", list_posts()),
        ("ListPosts deep page", list_posts(deep_token)),
        (f"ListUsers query={query!r}", list_users(query)),
    ]


def _shape(name: str) -> str:
    """The bare run a read compares with: the deep page and the query look like page 1 to it."""
    return name.split(" ")[0] if name.startswith(("ListPosts", "ListUsers")) else name


def build(
    data: Dataset, base: Workload, deep_token: str, stream_limit: int, auth_capacity: int
) -> list[Scenario]:
    """Every scenario in run order, timed and sized like `base` (its `calls` are ignored).

    `auth_capacity` is the calls the service hashes or queues at once (PASSWORD_HASH_THREADS +
    PASSWORD_HASH_QUEUE): AuthenticateUser runs with that many in flight, so that it measures
    hashing through the service rather than how fast the excess is refused.
    """
    conns = base.connections

    def w(name: str, calls: tuple[Call, ...], **changes: object) -> Workload:
        return replace(base, name=name, calls=calls, **changes)  # type: ignore[arg-type]

    reads = [
        Scenario(w(name, calls), "read", _shape(name))
        for name, calls in _reads(data, conns, deep_token)
    ]
    # What a fleet of callers looks like: many connections, 4 calls in flight on each.
    fleet = [
        Scenario(
            w(
                name + FLEET,
                calls,
                concurrency=FLEET_CONCURRENCY,
                connections=FLEET_CONNECTIONS,
            ),
            "read",
            _shape(name) + FLEET,
        )
        for name, calls in _reads(data, FLEET_CONNECTIONS, deep_token)
    ]
    auth = min(base.concurrency, auth_capacity)
    return [
        *reads,
        Scenario(w("CreatePost", create_post(data, conns)), "write", "CreatePost"),
        Scenario(
            w("BatchCreatePosts", batch_create_posts(data, conns)), "write", "BatchCreatePosts"
        ),
        # a connection and a stream per post: concurrent updates of one row queue on its lock
        Scenario(
            w("UpdatePost", update_post(data, base.concurrency), connections=base.concurrency),
            "write",
            "UpdatePost",
        ),
        Scenario(w("Mix 80/20", mix(data)), "mix", "Mix 80/20"),
        Scenario(
            w("AuthenticateUser", authenticate(data, conns), concurrency=auth),
            "auth",
            "AuthenticateUser",
        ),
        Scenario(
            w(
                "StreamPosts",
                stream_posts(),
                concurrency=1,
                warmup_s=0.0,
                stream=True,
                stream_limit=stream_limit,
            ),
            "stream",
            "StreamPosts",
        ),
        *fleet,
    ]
