"""ground truth: the predictions that may get a label, and the labels received

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25 21:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _joined() -> list[sa.Column[object]]:
    """What a label is joined to: the version identity and arm that answered, and the answer."""
    return [
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=True),
        sa.Column("arm", sa.String(length=16), nullable=False),
        sa.Column("task", sa.String(length=16), nullable=False),
        sa.Column("prediction", sa.Text(), nullable=False),  # JSON text: copied, never re-encoded
        sa.Column("probabilities", sa.Text(), nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "feedback_predictions",
        *_joined(),
        sa.Column("answered_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("request_id"),
    )
    op.create_index("ix_feedback_predictions_expires_at", "feedback_predictions", ["expires_at"])
    op.create_table(
        "feedback_labels",
        *_joined(),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("request_id"),
    )
    op.create_index("ix_feedback_labels_version", "feedback_labels", ["name", "version", "received_at"])
    op.create_index("ix_feedback_labels_received_at", "feedback_labels", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_feedback_labels_received_at", table_name="feedback_labels")
    op.drop_index("ix_feedback_labels_version", table_name="feedback_labels")
    op.drop_table("feedback_labels")
    op.drop_index("ix_feedback_predictions_expires_at", table_name="feedback_predictions")
    op.drop_table("feedback_predictions")
