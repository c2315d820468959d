"""version figures: what each serving process answered per version, summable over the fleet

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25 21:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "version_figures",
        sa.Column("replica", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("latency", sa.JSON(), nullable=False),
        sa.Column("latency_sum", sa.Float(), nullable=False),
        sa.Column("seen_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("replica", "name", "version"),
    )
    op.create_index("ix_version_figures_name_version", "version_figures", ["name", "version"])


def downgrade() -> None:
    op.drop_index("ix_version_figures_name_version", table_name="version_figures")
    op.drop_table("version_figures")
