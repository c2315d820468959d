"""artifact uri and listing fingerprint per version

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 12:55:48.746389
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("artifact_uri", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("listing", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_column("listing")
        batch_op.drop_column("artifact_uri")
