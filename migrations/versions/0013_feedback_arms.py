"""feedback arms: which (version identity, arm) pairs have labels, so that live quality does not
scan every label to learn it

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-26 00:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback_arms",
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),  # -1: the registry gave none
        sa.Column("arm", sa.String(length=16), nullable=False),
        sa.Column("last_label_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", "version", "source", "created_ms", "arm"),
    )
    op.execute(  # the pairs of the labels already received (once, at the upgrade)
        "INSERT INTO feedback_arms (name, version, source, created_ms, arm, last_label_at) "
        "SELECT name, version, source, COALESCE(created_ms, -1), arm, MAX(received_at) "
        "FROM feedback_labels GROUP BY name, version, source, COALESCE(created_ms, -1), arm"
    )


def downgrade() -> None:
    op.drop_table("feedback_arms")
