"""each replica's traffic counts per model, arm and version, for /traffic's sum over replicas

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-13 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "traffic_counts",
        sa.Column("replica", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("arm", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("agreed", sa.BigInteger(), nullable=False),
        sa.Column("differed", sa.BigInteger(), nullable=False),
        sa.Column("dropped", sa.BigInteger(), nullable=False),
        sa.Column("seen_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("replica", "name", "arm", "version"),
    )
    op.create_index("ix_traffic_counts_name", "traffic_counts", ["name"])


def downgrade() -> None:
    op.drop_index("ix_traffic_counts_name", table_name="traffic_counts")
    op.drop_table("traffic_counts")
