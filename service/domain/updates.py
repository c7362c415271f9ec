"""Conditional updates (AIP-154): apply an update only while the caller's etag is current."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from service.domain.entities import version_of
from service.domain.errors import NotFound, StaleEtag
from service.domain.ports import VersionedRows

R = TypeVar("R")


async def update_if_current(
    rows: VersionedRows[R],
    kind: str,
    row_id: int,
    values: dict[str, Any],
    etag: str,
    not_found: Callable[[int], NotFound],
) -> R:
    """Applies `values` to row `row_id`; with a non-empty `etag`, only if it is still current.

    ABORTED (STALE_ETAG) when the etag is stale or not one of ours, NOT_FOUND when the row
    does not exist. The version check is part of the UPDATE itself, so two concurrent updates
    with the same etag cannot both apply.
    """
    expected = version_of(etag) if etag else None
    if etag and expected is None:
        raise StaleEtag(f"etag {etag!r} does not match {kind} {row_id}")
    updated = await rows.update(row_id, values, expected_version=expected)
    if updated is not None:
        return updated
    if await rows.exists(row_id):
        raise StaleEtag(f"{kind} {row_id} was changed since etag {etag!r}: read it again")
    raise not_found(row_id)
