"""drift windows: each serving process's sampled inputs and outputs per version, binned

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26 00:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drift_windows",
        sa.Column("replica", sa.String(length=128), nullable=False),
        sa.Column("uid", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=True),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("seen_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("replica", "uid"),
    )
    op.create_index("ix_drift_windows_seen_at", "drift_windows", ["seen_at"])


def downgrade() -> None:
    op.drop_index("ix_drift_windows_seen_at", table_name="drift_windows")
    op.drop_table("drift_windows")
