"""the fleet: each process's heartbeat and holdings, and what each replica served lately

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fleet_members",
        sa.Column("member", sa.String(length=128), nullable=False),
        sa.Column("replica", sa.String(length=256), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("warm_rule", sa.Text(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("seen_at", sa.Float(), nullable=False),
        sa.Column("max_models", sa.Integer(), nullable=False),
        sa.Column("budget_bytes", sa.BigInteger(), nullable=False),
        sa.Column("loaded_bytes", sa.BigInteger(), nullable=False),
        sa.Column("holdings", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("member"),
    )
    op.create_index("ix_fleet_members_replica", "fleet_members", ["replica"])
    op.create_table(
        "replica_history",
        sa.Column("replica", sa.String(length=256), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("last_served", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("replica", "name", "version"),
    )


def downgrade() -> None:
    op.drop_table("replica_history")
    op.drop_index("ix_fleet_members_replica", table_name="fleet_members")
    op.drop_table("fleet_members")
