"""User use cases: the rules between a validated request and the repositories."""

from __future__ import annotations

from typing import Any

from blog.v1.error_reason_pb2 import ErrorReason

from service.domain.entities import Page, UserRecord, UserWithPosts
from service.domain.errors import (
    Unauthenticated,
    user_not_found,
    user_not_found_by_email,
)
from service.domain.paging import PageTokens
from service.domain.passwords import Passwords
from service.domain.ports import CommitsAlone, PostRows, ReleaseConnection, UserRows
from service.domain.updates import update_if_current

_BAD_LOGIN = "login or password is incorrect"
WITH_POSTS_MAX = 100  # posts in a USER_VIEW_WITH_POSTS response


class Users:
    def __init__(
        self,
        *,
        users: UserRows,
        posts: PostRows,
        release_connection: ReleaseConnection,
        commits_alone: CommitsAlone,
        passwords: Passwords,
        tokens: PageTokens,
    ) -> None:
        self._users = users
        self._posts = posts
        self._release_connection = release_connection
        self._commits_alone = commits_alone
        self._passwords = passwords
        self._tokens = tokens

    async def create(self, *, password: str, **values: Any) -> UserRecord:
        """A new user with `values` (validated fields of UserRecord: email=, username=, ...)."""
        with self._passwords.admitted():
            hashed = await self._passwords.hash(password)
        self._commits_alone()
        return await self._users.create(hashed_password=hashed, **values)

    async def get(self, user_id: int) -> UserRecord:
        user = await self._users.get(user_id)
        if user is None:
            raise user_not_found(user_id)
        return user

    async def get_with_posts(self, user_id: int, *, max_bytes: int) -> UserWithPosts:
        """The user and their newest posts, newest first: at most WITH_POSTS_MAX, and no more
        than start within `max_bytes` (ListPosts with author_id pages through all of them)."""
        found = await self._posts.user_with_newest_posts(
            user_id, limit=WITH_POSTS_MAX, max_bytes=max_bytes
        )
        if found is None:
            raise user_not_found(user_id)
        return found

    async def get_by_email(self, email: str) -> UserRecord:
        user = await self._users.get_by_email(email)
        if user is None:
            raise user_not_found_by_email(email)
        return user

    async def list(
        self, *, page_size: int, page_token: str, query: str, is_active: bool | None
    ) -> Page[UserRecord]:
        filters: dict[str, object] = {"query": query, "is_active": is_active}
        after = self._tokens.parse(page_token, "users", filters)
        rows = await self._users.list_newest_first(
            limit=page_size + 1, after=after, query=query, is_active=is_active
        )
        return self._tokens.page("users", filters, rows, page_size)

    async def update(self, user_id: int, values: dict[str, Any], etag: str) -> UserRecord:
        return await update_if_current(
            self._users, "user", user_id, values, etag, user_not_found, self._commits_alone
        )

    async def change_password(self, user_id: int, new_password: str) -> None:
        with self._passwords.admitted():
            hashed = await self._passwords.hash(new_password)
        self._commits_alone()
        if not await self._users.set_password(user_id, hashed):
            raise user_not_found(user_id)

    async def delete(self, user_id: int) -> None:
        self._commits_alone()  # their posts go by the foreign key's ON DELETE CASCADE
        if not await self._users.delete(user_id):
            raise user_not_found(user_id)

    async def authenticate(self, login: str, password: str) -> UserRecord:
        """The user, or the same UNAUTHENTICATED for a wrong password, unknown login or inactive user."""
        with self._passwords.admitted():
            self._commits_alone()  # a read, and nothing the call does later depends on its snapshot
            found = await self._users.credentials(login)
            # The hash takes tens of milliseconds in a small thread pool: hold no connection
            # (and no transaction) while waiting for it. Nothing needs one: a rehash below is
            # a write of its own, conditional on the hash it replaces.
            await self._release_connection()
            # Unknown logins are verified against a dummy hash: every failure costs the same.
            ok = await self._passwords.verify(found.hashed_password if found else None, password)
            if found is None or not ok or not found.user.is_active:
                raise Unauthenticated(_BAD_LOGIN, reason=ErrorReason.INVALID_CREDENTIALS)
            if self._passwords.needs_rehash(found.hashed_password):
                # Conditional on the verified hash: a ChangePassword that committed meanwhile wins.
                upgraded = await self._passwords.hash(password)
                self._commits_alone()
                await self._users.upgrade_hash(found.user.id, found.hashed_password, upgraded)
        return found.user
