"""Attempt rows from the start: the trainer's process (pid, process group) and whether its output
is all stored; a row exists while its attempt runs, so its outcome and end are empty until then.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

Before it, the controller found a dead runner's process group in the job's event log, and a log
reader knew an attempt's output was complete by looking for the runner's "trainer exited" line.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch: SQLite cannot ALTER a column's nullability in place (the table is copied)
    with op.batch_alter_table("job_attempts") as batch:
        batch.alter_column("outcome", existing_type=sa.String(length=16), nullable=True)
        batch.alter_column("ended_at", existing_type=sa.DateTime(timezone=True), nullable=True)
        batch.add_column(sa.Column("pid", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("pgid", sa.Integer(), nullable=True))
        # attempts that ended before this revision: their output was complete long ago
        batch.add_column(sa.Column("output_complete", sa.Boolean(), nullable=False, server_default=sa.true()))
    with op.batch_alter_table("job_attempts") as batch:
        batch.alter_column("output_complete", existing_type=sa.Boolean(), existing_nullable=False,
                           server_default=sa.false())


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM job_attempts WHERE ended_at IS NULL"))  # running attempts' rows
    with op.batch_alter_table("job_attempts") as batch:
        batch.drop_column("output_complete")
        batch.drop_column("pgid")
        batch.drop_column("pid")
        batch.alter_column("ended_at", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch.alter_column("outcome", existing_type=sa.String(length=16), nullable=False)
