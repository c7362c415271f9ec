"""post_requests: request_id (AIP-155) of CreatePost / BatchCreatePosts

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 11:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "post_requests",
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(), nullable=False),
        sa.Column("post_ids", postgresql.ARRAY(sa.BigInteger()), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_post_requests")),
    )
    # The cleanup reads the oldest expired rows first.
    op.create_index("ix_post_requests_expires_at", "post_requests", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_post_requests_expires_at", table_name="post_requests")
    op.drop_table("post_requests")
