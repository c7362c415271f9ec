"""Responses that fit: no response is larger than a gRPC client accepts by default (4 MiB).

Pages stop early (with a next_page_token) and USER_VIEW_WITH_POSTS keeps fewer posts when the
next item would not fit. Sizes are the messages' own encoded sizes (ByteSize), summed as the
items are converted: no response is built twice, and at most one item past the limit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from blog.v1.error_reason_pb2 import ErrorReason
from google.protobuf.message import Message

from service.domain.errors import FieldViolation, InvalidArgument

# What grpcio, grpc-go and grpc-java clients accept unless configured otherwise.
CLIENT_RECEIVE_LIMIT = 4 * 1024 * 1024
# Room for a ListXResponse's next_page_token (field 2: tag, length, 54 characters).
TOKEN_ROOM = 64

M = TypeVar("M", bound=Message)


def response_limit(max_send_bytes: int) -> int:
    """The largest response to build: what clients accept, or less if the server sends less."""
    return min(max_send_bytes, CLIENT_RECEIVE_LIMIT)


def element_size(message: Message) -> int:
    """The bytes `message` adds as one element of a repeated field numbered below 16."""
    size = message.ByteSize()
    return 1 + max(1, (size.bit_length() + 6) // 7) + size


def fitting(messages: Iterable[M], budget: int) -> list[M]:
    """The leading `messages` that fit in `budget` bytes as elements of a repeated field.

    Consumed lazily: at most one message past the budget is built. The first one is kept
    whatever its size, so a page always advances (a single resource always fits in 4 MiB).
    """
    kept: list[M] = []
    for message in messages:
        budget -= element_size(message)
        if budget < 0 and kept:
            break
        kept.append(message)
    return kept


def response_too_large(field: str, size: int, limit: int) -> InvalidArgument:
    """For a response that cannot be cut short (a batch's): the request must be smaller."""
    return InvalidArgument(
        [
            FieldViolation(
                field,
                f"would make a {size}-byte response, more than the {limit} bytes a client"
                " accepts: send fewer or shorter items per call",
            )
        ],
        reason=ErrorReason.RESPONSE_TOO_LARGE,
    )
