"""users search: trigram indexes on lower(email) / lower(username), replacing those on the columns

ListUsers `query` now filters with `lower(col) LIKE lower(pattern)` instead of `col ILIKE
pattern` (the same match: in a UTF-8 database PostgreSQL's ILIKE lowers both sides itself, for
every row). Measured on the bench data set, the newest-first index walk that serves a common
query ('heidi', 1 user in 40) spends most of its time in that per-row case folding, and ILIKE
folds the pattern again for every row as well. The trigram indexes must then be on the
expressions the filter uses, or a rare query (which the planner answers from them) would scan
the table. Built and dropped CONCURRENTLY: no lock that stops writes on a big table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 14:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NEW = {
    "ix_users_lower_email_trgm": "lower(email)",
    "ix_users_lower_username_trgm": "lower(username)",
}
_OLD = {"ix_users_email_trgm": "email", "ix_users_username_trgm": "username"}


def _create(name: str, expression: str) -> None:
    # CONCURRENTLY cannot run in a transaction; IF NOT EXISTS lets a failed build be retried
    # after dropping the INVALID index it leaves behind.
    op.execute(
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} "
        f"ON users USING gin (({expression}) gin_trgm_ops)"
    )


def upgrade() -> None:
    with op.get_context().autocommit_block():
        for name, expression in _NEW.items():
            _create(name, expression)
        for name in _OLD:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name, column in _OLD.items():
            _create(name, column)
        for name in _NEW:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
