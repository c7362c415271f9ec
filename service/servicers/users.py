"""blog.v1.UserService: validates requests, calls the user use cases, builds responses."""

from __future__ import annotations

from typing import Any

from blog.v1 import resources_pb2, user_service_pb2, user_service_pb2_grpc
from google.protobuf import empty_pb2
from grpc import aio

from service.domain import validation as check
from service.domain.entities import UserRecord, settable, updatable
from service.domain.users import Users
from service.servicers.convert import (
    post_message,
    post_size_bound,
    update_values,
    user_message,
    user_size_bound,
)
from service.servicers.sizing import CLIENT_RECEIVE_LIMIT, TOKEN_ROOM, fitting

Context = aio.ServicerContext[Any, Any]
# Both derived from the record (entities.UserRecord) and the protos: a field added to both
# is created and updated with no list to edit here.
USER_FIELDS = updatable(UserRecord)  # UpdateUser's mask paths
_CREATED_FIELDS = tuple(
    name
    for name in settable(UserRecord)
    if name in user_service_pb2.CreateUserRequest.DESCRIPTOR.fields_by_name
)
_USER_VIEWS = frozenset(resources_pb2.UserView.values())


class UserServicer(user_service_pb2_grpc.UserServiceServicer):
    def __init__(self, users: Users, max_response_bytes: int = CLIENT_RECEIVE_LIMIT) -> None:
        self._users = users
        self._max_response_bytes = max_response_bytes

    async def CreateUser(
        self, request: user_service_pb2.CreateUserRequest, context: Context
    ) -> resources_pb2.User:
        with check.Violations() as v:
            check.fields(v, "", request, _CREATED_FIELDS, check.USER_RULES)
            check.password(v, "password", request.password)
        values = {name: getattr(request, name) for name in _CREATED_FIELDS}
        user = await self._users.create(password=request.password, **values)
        return user_message(user)

    async def GetUser(
        self, request: user_service_pb2.GetUserRequest, context: Context
    ) -> resources_pb2.User:
        with check.Violations() as v:
            check.resource_id(v, "id", request.id)
            v.check(request.view in _USER_VIEWS, "view", "is not a known UserView")
        if request.view != resources_pb2.USER_VIEW_WITH_POSTS:
            return user_message(await self._users.get(request.id))
        found = await self._users.get_with_posts(request.id, max_bytes=self._max_response_bytes)
        budget = self._max_response_bytes - user_size_bound(found.user)
        user = user_message(found.user)
        if found.posts:
            kept = fitting(found.posts, post_size_bound, budget)
            user.posts.extend(post_message(p) for p in found.posts[:kept])
        return user

    async def GetUserByEmail(
        self, request: user_service_pb2.GetUserByEmailRequest, context: Context
    ) -> resources_pb2.User:
        with check.Violations() as v:
            check.email(v, "email", request.email)
        return user_message(await self._users.get_by_email(request.email))

    async def ListUsers(
        self, request: user_service_pb2.ListUsersRequest, context: Context
    ) -> user_service_pb2.ListUsersResponse:
        with check.Violations() as v:
            page_size = check.page_size(v, "page_size", request.page_size)
            check.search_query(v, "query", request.query)
            check.token(v, "page_token", request.page_token)
        page = await self._users.list(
            page_size=page_size,
            page_token=request.page_token,
            query=request.query,
            is_active=request.is_active if request.HasField("is_active") else None,
        )
        page = page.first(
            fitting(page.items, user_size_bound, self._max_response_bytes - TOKEN_ROOM)
        )
        return user_service_pb2.ListUsersResponse(
            users=[user_message(u) for u in page.items], next_page_token=page.next_page_token
        )

    async def UpdateUser(
        self, request: user_service_pb2.UpdateUserRequest, context: Context
    ) -> resources_pb2.User:
        user = request.user
        values = update_values(request, "user", USER_FIELDS, check.USER_RULES)
        return user_message(await self._users.update(user.id, values, user.etag))

    async def ChangePassword(
        self, request: user_service_pb2.ChangePasswordRequest, context: Context
    ) -> empty_pb2.Empty:
        with check.Violations() as v:
            check.resource_id(v, "id", request.id)
            check.password(v, "new_password", request.new_password)
        await self._users.change_password(request.id, request.new_password)
        return empty_pb2.Empty()

    async def DeleteUser(
        self, request: user_service_pb2.DeleteUserRequest, context: Context
    ) -> empty_pb2.Empty:
        with check.Violations() as v:
            check.resource_id(v, "id", request.id)
        await self._users.delete(request.id)
        return empty_pb2.Empty()

    async def AuthenticateUser(
        self, request: user_service_pb2.AuthenticateUserRequest, context: Context
    ) -> resources_pb2.User:
        with check.Violations() as v:
            v.check(bool(request.login), "login", "is required")
            check.free_text(v, "login", request.login)
            v.check(bool(request.password), "password", "is required")
            check.free_text(v, "password", request.password)
        return user_message(await self._users.authenticate(request.login, request.password))
