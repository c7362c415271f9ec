"""Conditional updates (AIP-154): apply an update only while the caller's etag is current."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from service.domain.entities import version_of
from service.domain.errors import NotFound, StaleEtag
from service.domain.ports import CommitsAlone, VersionedRows

R = TypeVar("R")


async def update_if_current(
    rows: VersionedRows[R],
    kind: str,
    row_id: int,
    values: dict[str, Any],
    etag: str,
    not_found: Callable[[int], NotFound],
    commits_alone: CommitsAlone,
) -> R:
    """Applies `values` to row `row_id`; with a non-empty `etag`, only if it is still current.

    ABORTED (STALE_ETAG) when the etag is stale or not one of ours, NOT_FOUND when the row
    does not exist. The version check is part of the UPDATE itself, so two concurrent updates
    with the same etag cannot both apply, and the UPDATE is the whole write: it commits alone.
    When a conditional one matches nothing, a read tells a stale etag from a missing row: alone
    too, as it changes nothing and reads what it would inside a READ COMMITTED transaction
    (whose every statement sees the latest commits).
    """
    expected = version_of(etag) if etag else None
    if etag and expected is None:
        raise StaleEtag(f"etag {etag!r} does not match {kind} {row_id}")
    commits_alone()
    updated = await rows.update(row_id, values, expected_version=expected)
    if updated is not None:
        return updated
    if expected is None:
        raise not_found(row_id)  # an unconditional update misses only a row that is not there
    commits_alone()
    if await rows.exists(row_id):
        raise StaleEtag(f"{kind} {row_id} was changed since etag {etag!r}: read it again")
    raise not_found(row_id)
