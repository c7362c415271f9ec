"""What a client reads from a failed call: the status, ErrorInfo and BadRequest."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass
class RichError:
    code: grpc.StatusCode
    message: str
    reason: str
    domain: str
    violations: dict[str, str]


def rich_error(error: grpc.RpcError) -> RichError:
    """The status, ErrorInfo and BadRequest a client reads from a failed call."""
    call: Any = error  # an aio.AioRpcError or grpc.Call: both carry code, details, trailers
    status = rpc_status.from_call(call)
    reason = domain = ""
    violations: dict[str, str] = {}
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, domain = info.reason, info.domain
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = {v.field: v.description for v in bad.field_violations}
    return RichError(call.code(), call.details() or "", reason, domain, violations)


async def failure(call: Awaitable[Any]) -> RichError:
    """The rich error of a call that must fail (the test fails if it succeeds)."""
    with pytest.raises(grpc.RpcError) as caught:
        await call
    return rich_error(caught.value)


async def code_of(call: Any) -> grpc.StatusCode:
    """The status a call (anything awaitable: an aio call, a coroutine) ends with: OK, or its
    error's code. Typed Any because the generated aio stubs claim to return the response."""
    try:
        await call
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        return code
    return grpc.StatusCode.OK
