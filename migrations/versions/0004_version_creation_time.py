"""a version's creation time (with its source, what tells a re-created version apart);
sync requests that also ask to verify the bytes of what is served

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 10:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL for rows seen before: the sync fills it in on its next pass when the source
    # still matches (the same version), and re-pins when it does not (a re-created one).
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("created_ms", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("sync_requests") as batch:
        batch.add_column(sa.Column("verify", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("sync_requests") as batch:
        batch.drop_column("verify")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("created_ms")
