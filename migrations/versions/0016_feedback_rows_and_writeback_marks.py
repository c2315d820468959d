"""feedback rows: an answer of several rows is kept whole, and each of its rows takes a label;
writeback marks: what the sync leader has written back to MLflow, for the next leader

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-26 04:00:00.000000
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations
from sqlalchemy.exc import SAWarning

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


@contextmanager
def _rekeyed() -> Iterator[BatchOperations]:
    """feedback_labels with a new primary key. SQLite's copy of the table reflects the old key
    column as a key and SQLAlchemy warns that the new key replaces it, which is the point."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*specifies columns .* as primary_key=True", category=SAWarning)
        with op.batch_alter_table("feedback_labels", recreate="auto") as batch:
            yield batch


def upgrade() -> None:
    # What was kept before is one row an answer, and each label is for row 0: the defaults.
    op.add_column("feedback_predictions", sa.Column("rows", sa.Integer(), nullable=False, server_default="1"))
    # The key becomes (request_id, row): batch mode recreates the table on SQLite, which cannot
    # alter a primary key; on PostgreSQL it drops and adds the constraint.
    with _rekeyed() as batch:
        batch.add_column(sa.Column("row", sa.Integer(), nullable=False, server_default="0"))
        if op.get_bind().dialect.name == "postgresql":
            batch.drop_constraint("feedback_labels_pkey", type_="primary")
        batch.create_primary_key("feedback_labels_pkey", ["request_id", "row"])
    op.create_table(
        "writeback_marks",
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("logged", sa.JSON(), nullable=False),
        sa.Column("pending_step", sa.BigInteger(), nullable=True),
        sa.Column("pending_key", sa.String(length=256), nullable=True),
        sa.Column("pending_covers", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("name", "version"),
    )


def downgrade() -> None:
    op.drop_table("writeback_marks")
    op.execute('DELETE FROM feedback_labels WHERE "row" > 0')  # the old key holds one label a request
    with _rekeyed() as batch:
        if op.get_bind().dialect.name == "postgresql":
            batch.drop_constraint("feedback_labels_pkey", type_="primary")
        batch.create_primary_key("feedback_labels_pkey", ["request_id"])
        batch.drop_column("row")
    op.drop_column("feedback_predictions", "rows")
