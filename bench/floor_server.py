"""The floor: grpc.aio and asyncpg alone, no layers, for GetUser, GetUserByEmail and CreatePost.

What the ratio targets are measured against is the bare server (bench.bare_server: gRPC with
no database). Between the two sits the least any service of this stack must do per call: take a
pooled asyncpg connection, run one prepared statement, build the message. This server does
exactly that and nothing else (no request id, no log line, no metrics, no validation, no
deadline, no error mapping, no SQLAlchemy pool), on uvloop, its methods in one generic handler
as the service serves them. Its ratio to bare, in the same run, is the ceiling of the service's:

    python -m bench.floor_server --port 50072 --database-url postgresql://postgres@127.0.0.1/bench &
    DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1/bench \
        python -m bench --target 127.0.0.1:50072 --pid $! --only "=GetUser,=GetUserByEmail,=CreatePost"

(With DATABASE_URL the bench reads its requests from the seeded database; without it, it would
ask the target's ListUsers, which this server does not serve.)

It is a measuring instrument, never a service: unknown ids answer an empty User, every other
method UNIMPLEMENTED.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

import asyncpg
import blog.v1.post_service_pb2_grpc as post_grpc
import blog.v1.resources_pb2 as res_pb
import blog.v1.user_service_pb2_grpc as user_grpc
import grpc
import uvloop
from google.protobuf.timestamp_pb2 import Timestamp

from bench.bare_server import serve_until_signalled
from service.methods import MethodTable
from service.servicers.convert import timestamp

_USER = (
    "id, email, username, display_name, is_active, is_superuser, created_at, updated_at, version"
)
_BY_ID = f"SELECT {_USER} FROM users WHERE id = $1"
_BY_EMAIL = f"SELECT {_USER} FROM users WHERE lower(email) = lower($1)"
_CREATE = f"""
WITH post AS (
    INSERT INTO posts (author_id, title, content, published) VALUES ($1, $2, $3, $4)
    RETURNING id, author_id, title, content, published, created_at, version
)
SELECT post.*, {", ".join(f"u.{c}" for c in _USER.split(", "))}
FROM post JOIN users u ON u.id = post.author_id
"""


def _ts(value: datetime | None) -> Timestamp | None:
    return None if value is None else timestamp(value)


def _user(row: Any, at: int = 0) -> res_pb.User:
    return res_pb.User(
        id=row[at],
        email=row[at + 1],
        username=row[at + 2],
        display_name=row[at + 3],
        is_active=row[at + 4],
        is_superuser=row[at + 5],
        created_at=_ts(row[at + 6]),
        updated_at=_ts(row[at + 7]),
        etag=str(row[at + 8]),
    )


class FloorUsers(user_grpc.UserServiceServicer):
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def GetUser(self, request: Any, context: Any) -> res_pb.User:
        async with self._pool.acquire() as connection:
            row = await connection.fetchrow(_BY_ID, request.id)
        return res_pb.User() if row is None else _user(row)

    async def GetUserByEmail(self, request: Any, context: Any) -> res_pb.User:
        async with self._pool.acquire() as connection:
            row = await connection.fetchrow(_BY_EMAIL, request.email)
        return res_pb.User() if row is None else _user(row)


class FloorPosts(post_grpc.PostServiceServicer):
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def CreatePost(self, request: Any, context: Any) -> res_pb.Post:
        async with self._pool.acquire() as connection:
            row = await connection.fetchrow(
                _CREATE, request.author_id, request.title, request.content, request.published
            )
        return res_pb.Post(
            id=row[0],
            author_id=row[1],
            title=row[2],
            content=row[3],
            published=row[4],
            created_at=_ts(row[5]),
            etag=str(row[6]),
            author=_user(row, 7),
        )


async def serve(port: int, database_url: str, pool_size: int) -> None:
    async with asyncpg.create_pool(database_url, min_size=pool_size, max_size=pool_size) as pool:
        server = grpc.aio.server()
        methods = MethodTable()
        methods.add(user_grpc.add_UserServiceServicer_to_server, FloorUsers(pool))  # type: ignore[abstract]
        methods.add(post_grpc.add_PostServiceServicer_to_server, FloorPosts(pool))  # type: ignore[abstract]
        server.add_generic_rpc_handlers((methods,))
        await serve_until_signalled(server, port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor_server", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True, help="postgresql://... (asyncpg's form)")
    parser.add_argument("--pool-size", type=int, default=20, help="as DB_POOL_SIZE")
    args = parser.parse_args(argv)
    uvloop.run(serve(args.port, args.database_url, args.pool_size))


if __name__ == "__main__":
    main()
