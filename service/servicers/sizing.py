"""Responses that fit: no response is larger than a gRPC client accepts by default (4 MiB).

Pages stop early (with a next_page_token) and USER_VIEW_WITH_POSTS keeps fewer posts when the
next item would not fit. Sizes are upper bounds computed from the records (servicers.convert),
not encodings: measuring a message with ByteSize costs as much as serializing it, which a page
of small posts would pay for nothing. The items are then converted once, only those kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

# What grpcio, grpc-go and grpc-java clients accept unless configured otherwise.
CLIENT_RECEIVE_LIMIT = 4 * 1024 * 1024
# Room for a ListXResponse's next_page_token (field 2: tag, length, 54 characters).
TOKEN_ROOM = 64

T = TypeVar("T")


def response_limit(max_send_bytes: int) -> int:
    """The largest response to build: what clients accept, or less if the server sends less."""
    return min(max_send_bytes, CLIENT_RECEIVE_LIMIT)


def fitting(items: Sequence[T], size_bound: Callable[[T], int], budget: int) -> int:
    """How many of the leading `items` fit in `budget` bytes, by an upper bound of each one's
    encoded size as an element of a repeated field (convert.post_size_bound and the like).

    The first one always counts, so that a page advances (one resource always fits in 4 MiB).
    """
    count = 0
    for item in items:
        budget -= size_bound(item)
        if budget < 0 and count:
            break
        count += 1
    return count
