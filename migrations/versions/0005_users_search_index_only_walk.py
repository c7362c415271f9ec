"""users: the newest-first index carries the lowered email and username (index-only search walk)

A common ListUsers `query` ('heidi', in 1 username in 40) is served by the newest-first walk,
which stops after a page but passes some 2,000 users that do not match on the way, and folding
their email and username to lower case was most of what the statement cost PostgreSQL. The
new index keeps (created_at DESC, id DESC) as its keys, so it serves every newest-first walk
the old ix_users_created_at_id did, followed by lower(email) and lower(username), so that the
search's filter reads them from the index instead of computing them per row, and includes
email, username and is_active, without which PostgreSQL's planner refuses an index-only scan
of expressions over them (its documented limitation). The repository then picks a page's ids
from this index alone and reads only those rows. Measured on the bench data set (100k users):
PostgreSQL's CPU for a 'heidi' page fell from 1.8-1.95 ms to 0.76-0.90 ms.

The old index is a prefix of the new one, so it goes. Built and dropped CONCURRENTLY: no lock
that stops writes on a big table.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 22:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NEW = (
    "ix_users_newest_first_search",
    "users (created_at DESC, id DESC, lower(email), lower(username))"
    " INCLUDE (email, username, is_active)",
)
_OLD = ("ix_users_created_at_id", "users (created_at DESC, id DESC)")


def _replace(create: tuple[str, str], drop: tuple[str, str]) -> None:
    # CONCURRENTLY cannot run in a transaction; IF NOT EXISTS lets a failed build be retried
    # after dropping the INVALID index it leaves behind.
    name, definition = create
    with op.get_context().autocommit_block():
        op.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {definition}")
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {drop[0]}")


def upgrade() -> None:
    _replace(_NEW, _OLD)


def downgrade() -> None:
    _replace(_OLD, _NEW)
