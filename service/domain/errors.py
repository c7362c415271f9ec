"""Domain errors: what went wrong, in the service's own terms.

Repositories and servicers raise these; the error interceptor is the one place that
turns them into gRPC statuses with ErrorInfo / BadRequest details (AIP-193).

Each class declares its status code once, as a `google.rpc.Code` (protobuf, not grpc: the
domain stays free of the transport), and each error carries a reason of the API's
`enum ErrorReason` (protos/blog/v1/error_reason.proto), which clients see through
reflection. A new kind of error is one class here; a new reason, one enum value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from blog.v1.error_reason_pb2 import ErrorReason
from google.rpc import code_pb2

ERROR_DOMAIN = "blog.v1"

Reason: TypeAlias = ErrorReason.ValueType


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request: `field` is a path such as `user.email` or `requests[3].title`."""

    field: str
    description: str


class DomainError(Exception):
    """Base of every error a client can be told about: a status code and a stable reason."""

    code: ClassVar[code_pb2.Code] = code_pb2.INTERNAL
    reason: Reason = ErrorReason.INTERNAL

    def __init__(self, message: str, *, reason: Reason | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class InvalidArgument(DomainError):
    code = code_pb2.INVALID_ARGUMENT
    reason = ErrorReason.INVALID_ARGUMENT

    def __init__(self, violations: list[FieldViolation], *, reason: Reason | None = None) -> None:
        # The total comes first, so that it survives when the message is shortened to fit.
        shown = "; ".join(f"{v.field} {v.description}" for v in violations[:3])
        if len(violations) > 3:
            shown = f"{len(violations)} invalid fields, the first: {shown}"
        super().__init__(shown, reason=reason)
        self.violations = violations


class MalformedRequest(InvalidArgument):
    """The request's bytes do not decode (truncated, invalid UTF-8 in a string): no field of
    it can be named, so the message says what failed and no BadRequest comes with it."""

    reason = ErrorReason.MALFORMED_REQUEST

    def __init__(self, message: str) -> None:
        DomainError.__init__(self, message)
        self.violations = []


class ResponseTooLarge(InvalidArgument):
    """The response would pass the size a client accepts: nothing is written (the check runs
    before COMMIT, interceptors.responses), and the client should ask for less at once."""

    reason = ErrorReason.RESPONSE_TOO_LARGE

    def __init__(self, message: str) -> None:
        DomainError.__init__(self, message)
        self.violations = []


class _ReasonRequired(DomainError):
    """A kind of error with several reasons: each instance names its own."""

    def __init__(self, message: str, *, reason: Reason) -> None:
        super().__init__(message, reason=reason)


class NotFound(_ReasonRequired):
    code = code_pb2.NOT_FOUND


class AlreadyExists(_ReasonRequired):
    code = code_pb2.ALREADY_EXISTS


class StaleEtag(DomainError):
    code = code_pb2.ABORTED
    reason = ErrorReason.STALE_ETAG


class TransientConflict(DomainError):
    """A serialization failure or deadlock: the whole call may simply be retried."""

    code = code_pb2.ABORTED
    reason = ErrorReason.TRANSACTION_CONFLICT


class Unauthenticated(_ReasonRequired):
    code = code_pb2.UNAUTHENTICATED


class ResourceExhausted(_ReasonRequired):
    """A capacity of the process is full for this kind of call: retry with backoff."""

    code = code_pb2.RESOURCE_EXHAUSTED


class DatabaseUnavailable(DomainError):
    code = code_pb2.UNAVAILABLE
    reason = ErrorReason.DATABASE_UNAVAILABLE


class ShuttingDown(DomainError):
    """The server is stopping and refused the call before it started: safe to retry elsewhere."""

    code = code_pb2.UNAVAILABLE
    reason = ErrorReason.SHUTTING_DOWN


class DeadlineExceeded(DomainError):
    code = code_pb2.DEADLINE_EXCEEDED
    reason = ErrorReason.DEADLINE_EXCEEDED


class ReadOnlyViolation(DomainError):
    """A write was attempted from a NO_SIDE_EFFECTS call: a bug in the service, not the client."""

    reason = ErrorReason.READ_ONLY_TRANSACTION


def user_not_found(user_id: int) -> NotFound:
    return NotFound(f"user {user_id} not found", reason=ErrorReason.USER_NOT_FOUND)


def post_not_found(post_id: int) -> NotFound:
    return NotFound(f"post {post_id} not found", reason=ErrorReason.POST_NOT_FOUND)


def user_not_found_by_email(email: str) -> NotFound:
    return NotFound(f"no user with email {email!r}", reason=ErrorReason.USER_NOT_FOUND)
