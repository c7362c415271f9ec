"""Opaque, authenticated keyset page tokens (AIP-158).

A token holds the position of the last row served (created_at, id) and a digest of the
filters it was issued for, MACed with the shared secret, so every process and replica with
the same configuration accepts it, and a forged, altered or re-filtered token is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

from blog.v1.error_reason_pb2 import ErrorReason

from service.domain.entities import Page
from service.domain.errors import FieldViolation, InvalidArgument

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAC_BYTES = 16
_FILTER_BYTES = 8
_LAYOUT = struct.Struct(">qq8s")  # created_at in µs since epoch, id, filters digest


class Keyed(Protocol):
    @property
    def created_at(self) -> datetime: ...
    @property
    def id(self) -> int: ...


K = TypeVar("K", bound=Keyed)


@dataclass(frozen=True, slots=True)
class Cursor:
    """The keyset position: rows strictly after it (in newest-first order) come next."""

    created_at: datetime
    id: int


class PageTokens:
    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(b"blog.v1 page token:" + secret.encode()).digest()

    @staticmethod
    def _filters_digest(collection: str, filters: dict[str, object]) -> bytes:
        canonical = json.dumps([collection, filters], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).digest()[:_FILTER_BYTES]

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:_MAC_BYTES]

    def issue(self, collection: str, filters: dict[str, object], cursor: Cursor) -> str:
        micros = (cursor.created_at - _EPOCH) // timedelta(microseconds=1)
        body = _LAYOUT.pack(micros, cursor.id, self._filters_digest(collection, filters))
        return _encoded(body + self._mac(body))

    def page(
        self, collection: str, filters: dict[str, object], rows: Sequence[K], page_size: int
    ) -> Page[K]:
        """A page from `rows` fetched with limit page_size + 1: the extra row means more follow.

        A page may still be cut shorter (`Page.first`) when its items do not all fit in one
        response; the token it then carries resumes after the last item kept.
        """

        def resume_after(item: K) -> str:
            return self.issue(collection, filters, Cursor(item.created_at, item.id))

        if len(rows) <= page_size:
            return Page(list(rows), "", resume_after)
        return Page(list(rows[:page_size]), resume_after(rows[page_size - 1]), resume_after)

    def parse(
        self, token: str, collection: str, filters: dict[str, object], field: str = "page_token"
    ) -> Cursor | None:
        """The cursor in `token` (None for the first page) or INVALID_ARGUMENT."""
        if not token:
            return None
        not_ours = _bad(field, "is not a page token issued by this service")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:
            raw = b""
        # A token has one spelling, the one `issue` wrote: the decoder alone would skip any
        # character outside the alphabet ("tok\x01en" would pass for "token").
        if _encoded(raw) != token:
            raise not_ours
        body, mac = raw[: _LAYOUT.size], raw[_LAYOUT.size :]
        if len(raw) != _LAYOUT.size + _MAC_BYTES or not hmac.compare_digest(mac, self._mac(body)):
            raise not_ours
        micros, row_id, digest = _LAYOUT.unpack(body)
        if not hmac.compare_digest(digest, self._filters_digest(collection, filters)):
            raise _bad(
                field, "was issued for a different query: keep the filters of the first page"
            )
        # A valid MAC is no proof the position is one we wrote: whoever holds the secret (the
        # public development key, say) can sign any. Refuse what no row can have.
        try:
            created_at = _EPOCH + timedelta(microseconds=micros)
        except OverflowError:
            raise not_ours from None
        if row_id <= 0:
            raise not_ours
        return Cursor(created_at, row_id)


def _encoded(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _bad(field: str, description: str) -> InvalidArgument:
    return InvalidArgument(
        [FieldViolation(field, description)], reason=ErrorReason.INVALID_PAGE_TOKEN
    )
