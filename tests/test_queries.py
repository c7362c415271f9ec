"""The data layer checks itself (repositories.base): each guard of `Query` and `Columns` fires.

Statements are refused at construction (which is import, for the repositories' own), a call
with a wrong parameter raises before anything reaches the database, the type processing
SQLAlchemy would apply is applied, and records read from real rows get their fields right.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import pytest
from sqlalchemy import BigInteger, Boolean, Enum, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY

from service.db.models import Post, User
from service.repositories import posts as post_repository
from service.repositories import users as user_repository
from service.repositories.base import Columns, Query, written_limit


def test_an_expanding_in_is_refused_with_what_to_write_instead() -> None:
    with pytest.raises(ValueError, match=r"ids.*rendered per execution.*func\.any\(bindparam"):
        Query(select(User.id).where(User.id.in_(bindparam("ids", expanding=True))))
    with pytest.raises(ValueError, match="rendered per execution"):
        Query(select(User.id).where(User.id.in_([1, 2, 3])))


def test_literal_execute_and_computed_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match=r"row_id.*rendered per execution"):
        Query(select(User.id).where(User.id == bindparam("row_id", literal_execute=True)))
    with pytest.raises(ValueError, match=r"row_id.*compute their value"):
        Query(select(User.id).where(User.id == bindparam("row_id", callable_=lambda: 1)))


def test_the_array_form_is_accepted() -> None:
    query = Query(
        select(User.id).where(User.id == func.any(bindparam("ids", type_=ARRAY(BigInteger))))
    )
    assert "= any($1::BIGINT[])" in query.sql
    assert query.arguments({"ids": (1, 2)}) == [[1, 2]]  # ARRAY's bind processor: a list


def test_a_mistyped_parameter_raises_instead_of_becoming_null() -> None:
    by_author = post_repository._list_query(
        after=False, author_id=True, published=False, query=False, limit=None
    )
    assert by_author.arguments({"limit": 5, "max_bytes": 10, "author_id": 7}) == [7, 5, 10]
    with pytest.raises(
        TypeError, match=r"unknown parameters authorid.*missing parameters author_id"
    ):
        by_author.arguments({"limit": 5, "max_bytes": 10, "authorid": 7})


def test_a_missing_parameter_raises_and_one_with_a_value_is_optional() -> None:
    credentials = user_repository._CREDENTIALS  # ... LIMIT 1: the 1 is a parameter with a value
    assert credentials.arguments({"login": "ada"}) == ["ada", 1]
    with pytest.raises(TypeError, match="missing parameters login"):
        credentials.arguments({})
    with pytest.raises(TypeError, match="unknown parameters email"):
        credentials.arguments({"login": "ada", "email": "ada@example.com"})


def test_a_parameter_of_a_shape_the_call_did_not_pick_is_refused() -> None:
    """Each filter combination is its own statement: a filter's value passed to a shape
    without that filter is a bug in the caller, never silently ignored."""
    unfiltered = user_repository._list_query(after=False, query=False, is_active=False, limit=None)
    with pytest.raises(TypeError, match="unknown parameters is_active"):
        unfiltered.arguments({"limit": 5, "is_active": True})


async def test_bind_processors_are_applied(db: asyncpg.Connection) -> None:
    """Boolean's processor (what SQLAlchemy applies): 1 becomes True, which asyncpg alone
    refuses, and a value that is no boolean is refused before it reaches the driver."""
    query = Query(select(User.id).where(User.is_active == bindparam("active")))
    assert query.arguments({"active": 1}) == [True]
    assert await db.fetch(query.sql, *query.arguments({"active": 1})) == []
    with pytest.raises(asyncpg.DataError, match="a boolean is required"):
        await db.fetch(query.sql, 1)
    with pytest.raises(TypeError, match="Not a boolean value"):
        query.arguments({"active": "yes"})


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


async def test_result_processors_are_applied(db: asyncpg.Connection) -> None:
    """A type whose values the driver cannot carry as they are (a Python enum, stored as text)
    goes through its bind processor out and its result processor back."""
    colour = Enum(Colour, native_enum=False, length=10)
    query = Query(
        select(bindparam("colour", type_=colour).label("colour"), bindparam("on", type_=Boolean))
    )
    assert query.process_row is not None
    rows = await db.fetch(query.sql, *query.arguments({"colour": Colour.GREEN, "on": True}))
    assert rows[0][0] == "GREEN"  # what PostgreSQL holds
    assert list(query.process_row(rows[0])) == [Colour.GREEN, True]


def test_statements_whose_types_need_no_processing_pay_for_none() -> None:
    assert user_repository._BY_ID.process_row is None
    assert user_repository._BY_ID._bind_processors == ()


@dataclass(frozen=True, slots=True)
class _Misnamed:
    id: int
    mail: str


@dataclass(frozen=True, slots=True)
class _NestedFirst:
    author: object
    id: int


def test_a_record_field_that_is_no_column_is_refused() -> None:
    with pytest.raises(ValueError, match=r"_Misnamed\.mail: not a column of User"):
        Columns(_Misnamed, User)
    with pytest.raises(ValueError, match="must come last"):
        Columns(_NestedFirst, Post, nested=("author",))


async def test_records_read_from_real_rows_get_every_field_right(db: asyncpg.Connection) -> None:
    """The select lists are derived from the records: a row read back by position lands in
    the fields of the same names, whatever order the table's columns are in."""
    user_id = await db.fetchval(
        "INSERT INTO users (email, username, hashed_password, is_superuser)"
        " VALUES ('ada@example.com', 'ada', 'x', true) RETURNING id"
    )
    post_id = await db.fetchval(
        "INSERT INTO posts (author_id, title, content, published)"
        " VALUES ($1, 'T', 'C', true) RETURNING id",
        user_id,
    )
    stored = await db.fetchrow("SELECT * FROM users WHERE id = $1", user_id)
    query = user_repository._BY_ID
    user = user_repository.USER.read(
        (await db.fetch(query.sql, *query.arguments({"row_id": user_id})))[0]
    )
    for name in user.__dataclass_fields__:
        assert getattr(user, name) == stored[name], name
    by_id = post_repository._BY_ID
    row = (await db.fetch(by_id.sql, *by_id.arguments({"row_id": post_id})))[0]
    post = post_repository.post_from_row(row)
    assert (post.title, post.content, post.published, post.author_id) == ("T", "C", True, user_id)
    assert post.author == user and isinstance(post.created_at, datetime)


async def test_a_list_statement_runs_its_cached_generic_plan(db: asyncpg.Connection) -> None:
    """A LIMIT written into the statement lets PostgreSQL reuse one plan for every page; sent as
    a parameter, it made PostgreSQL plan every ListPosts afresh (half of its database CPU). A
    search keeps the parameter, so that each pattern can get the plan that suits it."""
    sizes = (1, 2, 3, 51, 101, 102, 150, 1001)
    assert [written_limit(n, searching=False) for n in sizes] == [1, 2, 3, 51, 101, 128, 256, 1024]
    assert written_limit(51, searching=True) is None
    author = await db.fetchval(
        "INSERT INTO users (email, username, hashed_password) VALUES ('a@b.c', 'abc', 'x')"
        " RETURNING id"
    )
    await db.execute(
        "INSERT INTO posts (author_id, title, content) SELECT $1, 'post ' || g, 'content'"
        " FROM generate_series(1, 20000) AS g",
        author,
    )
    await db.execute("ANALYZE posts")

    async def plans(written: int | None) -> tuple[int, int]:
        listing = post_repository._list_query(False, False, False, False, written)
        parameters = {"max_bytes": 1_000_000} | ({"limit": 51} if written is None else {})
        statement = await db.prepare(listing.sql)
        for _ in range(8):
            assert len(await statement.fetch(*listing.arguments(parameters))) >= 51
        generic, custom = await db.fetchrow(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE name = $1",
            statement.get_name(),
        )
        return generic, custom

    assert await plans(51) == (3, 5)  # PostgreSQL tries 5 custom plans first
    assert await plans(None) == (0, 8)  # what a parameter gets, with this many rows
