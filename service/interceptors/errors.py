"""The one place where errors become gRPC statuses, with ErrorInfo and BadRequest (AIP-193)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_status import rpc_status

from service.domain import errors
from service.interceptors.base import CallInterceptor

log = logging.getLogger(__name__)

_CODES: list[tuple[type[errors.DomainError], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.StaleEtag, grpc.StatusCode.ABORTED),
    (errors.TransientConflict, grpc.StatusCode.ABORTED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.DatabaseUnavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.ShuttingDown, grpc.StatusCode.UNAVAILABLE),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
]


def status_code_of(error: errors.DomainError) -> grpc.StatusCode:
    for kind, code in _CODES:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


def _packed(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def rich_status(
    code: grpc.StatusCode,
    message: str,
    reason: str,
    violations: Sequence[errors.FieldViolation] = (),
) -> grpc.Status:
    details = [_packed(error_details_pb2.ErrorInfo(reason=reason, domain=errors.ERROR_DOMAIN))]
    if violations:
        details.append(
            _packed(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in violations
                    ]
                )
            )
        )
    status = status_pb2.Status(code=code.value[0], message=message, details=details)
    return rpc_status.to_status(status)


def status_of(error: errors.DomainError) -> grpc.Status:
    violations = error.violations if isinstance(error, errors.InvalidArgument) else []
    return rich_status(status_code_of(error), error.message, error.reason, violations)


class ErrorInterceptor(CallInterceptor):
    """Domain errors become their status; anything unexpected becomes a bare INTERNAL."""

    @asynccontextmanager
    async def around(
        self, method: str, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        try:
            yield
        except errors.DomainError as error:
            await _abort(context, status_of(error))
        except (aio.AbortError, aio.UsageError):
            raise
        except Exception:
            # The log line carries the request id (logging filter); the client gets no SQL,
            # no stack trace and no hash, only the id to quote.
            log.exception("unexpected error in %s", method)
            await _abort(
                context,
                rich_status(
                    grpc.StatusCode.INTERNAL,
                    "internal error; quote the x-request-id when reporting it",
                    "INTERNAL",
                ),
            )


async def _abort(context: aio.ServicerContext[Any, Any], status: grpc.Status) -> None:
    # Like abort_with_status, but keeps the trailing metadata already set (the request id).
    trailing = (*(context.trailing_metadata() or ()), *status.trailing_metadata)
    await context.abort(status.code, status.details, trailing_metadata=trailing)
