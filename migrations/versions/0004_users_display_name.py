"""users.display_name: the name to show, optional

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 14:10:00.000000

NOT NULL DEFAULT '' rather than nullable: the API's string is empty when there is none
(proto3), so the database holds one value for "none", not two (NULL and '').

Safe on a big table (squawk finds nothing): since PostgreSQL 11, adding a column with a
constant default rewrites nothing (the default is kept in the catalog), so its ACCESS EXCLUSIVE
lock lasts a moment, and lock_timeout keeps that moment from queueing every other statement
behind a long transaction (the migration fails instead, and can be run again). text rather
than varchar(100), and no CHECK: the 100-character limit is the service's validation's (the one
writer), since a CHECK would scan the table under that lock, or need a validation outside the
transaction, and a varchar's length is changed by an ALTER TABLE under the same lock.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timeouts() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '5s'")


def upgrade() -> None:
    _timeouts()
    op.add_column(
        "users",
        sa.Column("display_name", sa.Text(), server_default=sa.text("''"), nullable=False),
    )


def downgrade() -> None:
    _timeouts()
    op.drop_column("users", "display_name")
