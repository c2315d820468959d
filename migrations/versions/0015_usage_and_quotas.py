"""usage per caller, model, version and UTC day, summed over the fleet; the callers' quotas

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-26 04:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage",
        sa.Column("caller", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("predict_seconds", sa.Float(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("caller", "name", "version", "day"),
    )
    op.create_index("ix_usage_day", "usage", ["day"])
    op.create_table(
        "quotas",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("caller", sa.String(length=320), nullable=False),
        sa.Column("models", sa.String(length=256), nullable=False),
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column("unit", sa.String(length=8), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("quotas")
    op.drop_index("ix_usage_day", table_name="usage")
    op.drop_table("usage")
