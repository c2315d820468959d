"""jobs: their callbacks re-sent with backoff until the receiver takes one (callback_attempts,
callback_after), by whichever process of the fleet claims each attempt

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-26 07:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("callback_attempts", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("callback_after", sa.Float(), nullable=True))
    op.create_index("ix_jobs_callback_after", "jobs", ["callback_after"])
    # Jobs still open with a callback: due once they end, as a job submitted now is. (Those that
    # ended before keep the one delivery they had.) Few rows, read here: the callback is in JSON.
    jobs = sa.table(
        "jobs",
        sa.column("id", sa.String()),
        sa.column("state", sa.String()),
        sa.column("spec", sa.JSON()),
        sa.column("submitted_at", sa.Float()),
        sa.column("callback_after", sa.Float()),
    )
    connection = op.get_bind()
    for job_id, spec, submitted_at in connection.execute(
        sa.select(jobs.c.id, jobs.c.spec, jobs.c.submitted_at).where(jobs.c.state.in_(("queued", "running")))
    ):
        if isinstance(spec, dict) and spec.get("callback"):
            connection.execute(sa.update(jobs).where(jobs.c.id == job_id).values(callback_after=submitted_at))


def downgrade() -> None:
    op.drop_index("ix_jobs_callback_after", table_name="jobs")
    op.drop_column("jobs", "callback_after")
    op.drop_column("jobs", "callback_attempts")
