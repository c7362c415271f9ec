"""Every SQL statement about request ids (AIP-155) of CreatePost / BatchCreatePosts."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import BigInteger, Interval, bindparam, delete, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert

from service.db.models import PostRequest
from service.domain.entities import RememberedRequest
from service.repositories.base import BaseRepository, Query

# Expired rows each claim deletes: more than one, so the table shrinks whenever request ids
# arrive more slowly than they did a day earlier; few, so no claim pays for a backlog at once.
CLEANUP_BATCH = 10

_expired = (
    select(PostRequest.request_id)
    .where(PostRequest.expires_at < func.now())
    .order_by(PostRequest.expires_at)
    .limit(CLEANUP_BATCH)
    .with_for_update(skip_locked=True)  # concurrent claims clean different rows
)
_CLEANUP = delete(PostRequest).where(PostRequest.request_id.in_(_expired.scalar_subquery()))
# Claims the id: a row (without posts yet) when it is new, nothing when it is taken. A claim
# racing another transaction's claim of the same id waits for that one to end: when it
# commits, this one gets nothing and reads what it created; when it rolls back, this one wins.
_CLAIM = Query(
    pg_insert(PostRequest)
    .values(
        request_id=bindparam("request_id"),
        fingerprint=bindparam("fingerprint"),
        expires_at=func.now() + bindparam("keep", type_=Interval),
    )
    .on_conflict_do_nothing(index_elements=[PostRequest.request_id])
    .returning(PostRequest.request_id)
    .add_cte(_CLEANUP.cte("cleanup"))
)
_REMEMBER = Query(
    update(PostRequest)
    .where(PostRequest.request_id == bindparam("request_id"))
    .values(post_ids=bindparam("post_ids", type_=ARRAY(BigInteger)))
)
_RECALL = Query(
    select(PostRequest.fingerprint, PostRequest.post_ids).where(
        PostRequest.request_id == bindparam("request_id")
    )
)


class RequestRepository(BaseRepository):
    async def claim(self, request_id: uuid.UUID, fingerprint: bytes, keep: timedelta) -> bool:
        """Records a new request id for `keep`; False when it was recorded already.

        Also deletes a few expired ids, in the same statement: the table needs no cron.
        """
        row = await self._one(_CLAIM, request_id=request_id, fingerprint=fingerprint, keep=keep)
        return row is not None

    async def remember(self, request_id: uuid.UUID, post_ids: Sequence[int]) -> None:
        await self._all(_REMEMBER, request_id=request_id, post_ids=list(post_ids))

    async def recall(self, request_id: uuid.UUID) -> RememberedRequest:
        """What a claimed id's first call was and created (called after `claim` said False)."""
        row = await self._one(_RECALL, request_id=request_id)
        assert row is not None and row[1] is not None  # a claimed id's row is committed whole
        return RememberedRequest(bytes(row[0]), list(row[1]))
