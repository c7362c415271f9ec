"""Domain errors: what went wrong, in the service's own terms.

Repositories and servicers raise these; the error interceptor is the one place that
turns them into gRPC status codes with ErrorInfo / BadRequest details (AIP-193).
"""

from __future__ import annotations

from dataclasses import dataclass

ERROR_DOMAIN = "blog.v1"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request: `field` is a path such as `user.email` or `requests[3].title`."""

    field: str
    description: str


class DomainError(Exception):
    """Base of every error a client can be told about. `reason` is UPPER_SNAKE and stable."""

    reason: str = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class InvalidArgument(DomainError):
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation], *, reason: str | None = None) -> None:
        summary = "; ".join(f"{v.field} {v.description}" for v in violations[:5])
        more = f" (and {len(violations) - 5} more, see BadRequest)" if len(violations) > 5 else ""
        super().__init__(summary + more, reason=reason)
        self.violations = violations


class MalformedRequest(InvalidArgument):
    """The request's bytes do not decode (truncated, invalid UTF-8 in a string): no field of
    it can be named, so the message says what failed and no BadRequest comes with it."""

    reason = "MALFORMED_REQUEST"

    def __init__(self, message: str) -> None:
        DomainError.__init__(self, message)
        self.violations = []


class NotFound(DomainError):
    reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    reason = "ALREADY_EXISTS"


class StaleEtag(DomainError):
    reason = "STALE_ETAG"


class TransientConflict(DomainError):
    """A serialization failure or deadlock: the whole call may simply be retried."""

    reason = "TRANSACTION_CONFLICT"


class Unauthenticated(DomainError):
    reason = "UNAUTHENTICATED"


class ResourceExhausted(DomainError):
    """A capacity of the process is full for this kind of call: retry with backoff."""

    reason = "RESOURCE_EXHAUSTED"


class DatabaseUnavailable(DomainError):
    reason = "DATABASE_UNAVAILABLE"


class ShuttingDown(DomainError):
    """The server is stopping and refused the call before it started: safe to retry elsewhere."""

    reason = "SHUTTING_DOWN"


class DeadlineExceeded(DomainError):
    reason = "DEADLINE_EXCEEDED"


class ReadOnlyViolation(DomainError):
    """A write was attempted from a NO_SIDE_EFFECTS call: a bug in the service, not the client."""

    reason = "READ_ONLY_TRANSACTION"


def user_not_found(user_id: int) -> NotFound:
    return NotFound(f"user {user_id} not found", reason="USER_NOT_FOUND")


def post_not_found(post_id: int) -> NotFound:
    return NotFound(f"post {post_id} not found", reason="POST_NOT_FOUND")


def user_not_found_by_email(email: str) -> NotFound:
    return NotFound(f"no user with email {email!r}", reason="USER_NOT_FOUND")
