"""The one place where errors become gRPC statuses, with ErrorInfo and BadRequest (AIP-193)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, NoReturn

import grpc
from blog.v1.error_reason_pb2 import ErrorReason
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_status import rpc_status

from service.api import Method
from service.db import errors as db_errors
from service.domain import errors
from service.interceptors.base import Context, Proceed
from service.interceptors.outcome import ClientGone

log = logging.getLogger(__name__)

_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}

# The status travels in the trailers, and C-core clients read trailers above 8 KiB (gRPC's
# default metadata limit) as RESOURCE_EXHAUSTED instead of the error. The details go base64
# encoded (grpc-status-details-bin, 4/3 of these bytes) and the message twice (grpc-message,
# percent-encoded, and inside the details), which leaves room for the other trailers
# (request id, tracing) under the limit.
DETAILS_MAX_BYTES = 3072
MESSAGE_MAX_BYTES = 384
VIOLATIONS_MAX = 100
# A violation may quote the client's input (a mask path): each text is cut to this length.
VIOLATION_TEXT_MAX = 200


def status_code_of(error: errors.DomainError) -> grpc.StatusCode:
    return _STATUS_CODES[error.code]


def _packed(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _shortened(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 1] + "\u2026"


def _shortened_utf8(text: str, max_bytes: int) -> str:
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text
    return encoded[: max_bytes - 3].decode(errors="ignore") + "\u2026"


def _bad_request(
    violations: Sequence[errors.FieldViolation], budget: int
) -> error_details_pb2.BadRequest:
    """The first violations (at most VIOLATIONS_MAX) whose encoding fits in `budget` bytes."""
    bad = error_details_pb2.BadRequest()
    for v in violations[:VIOLATIONS_MAX]:
        bad.field_violations.add(
            field=_shortened(v.field, VIOLATION_TEXT_MAX),
            description=_shortened(v.description, VIOLATION_TEXT_MAX),
        )
        if bad.ByteSize() > budget:
            del bad.field_violations[-1]
            break
    return bad


def rich_status(
    code: grpc.StatusCode,
    message: str,
    reason: errors.Reason,
    violations: Sequence[errors.FieldViolation] = (),
) -> grpc.Status:
    """The status with its ErrorInfo and, for violations, a BadRequest, under 8 KiB in all.

    A BadRequest names only the first violations that fit; the message then says how many
    of how many.
    """
    message = _shortened_utf8(message, MESSAGE_MAX_BYTES)
    info = error_details_pb2.ErrorInfo(reason=ErrorReason.Name(reason), domain=errors.ERROR_DOMAIN)
    status = status_pb2.Status(code=code.value[0], message=message, details=[_packed(info)])
    if violations:
        # Room for the message suffix below, and the Any around the BadRequest (type URL).
        budget = DETAILS_MAX_BYTES - status.ByteSize() - 128
        bad = _bad_request(violations, budget)
        if len(bad.field_violations) < len(violations):
            shown = len(bad.field_violations)
            status.message += f" (the BadRequest names the first {shown} of {len(violations)})"
        status.details.append(_packed(bad))
    return rpc_status.to_status(status)


def status_of(error: errors.DomainError) -> grpc.Status:
    violations = error.violations if isinstance(error, errors.InvalidArgument) else []
    return rich_status(status_code_of(error), error.message, error.reason, violations)


class ErrorInterceptor:
    """Domain errors become their status, and so do the database's failures that mean one (a
    taken email, a cancelled statement, a lost connection: service.db.errors); anything else
    becomes a bare INTERNAL."""

    async def around(self, method: Method, request: Any, context: Context, proceed: Proceed) -> Any:
        try:
            return await proceed(request, context)
        except errors.DomainError as error:
            await _abort(context, status_of(error))
        except (aio.AbortError, aio.UsageError, ClientGone):
            raise  # a status already on its way, or no one left to send one to
        except Exception as error:
            known = db_errors.translate(error)
            if known is not None:
                await _abort(context, status_of(known))
            # The log line carries the request id (logging filter); the client gets no SQL,
            # no stack trace and no hash, only the id to quote.
            log.exception("unexpected error in %s", method.path)
            await _abort(
                context,
                rich_status(
                    grpc.StatusCode.INTERNAL,
                    "internal error; quote the x-request-id when reporting it",
                    ErrorReason.INTERNAL,
                ),
            )


async def _abort(context: Context, status: grpc.Status) -> NoReturn:
    # Like abort_with_status, but keeps the trailing metadata already set (the request id).
    # If the client left meanwhile this raises ClientGone, and the call reports CANCELLED.
    trailing = (*(context.trailing_metadata() or ()), *status.trailing_metadata)
    await context.abort(status.code, status.details, trailing_metadata=trailing)
