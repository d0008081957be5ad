"""Scheduling (issue 30): a job's priority, its preemption request and count; a project's quota,
fair-share weight and whether its jobs may be preempted; each project's decayed usage. Existing
jobs are of normal priority (50), existing projects unlimited with weight 1.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("priority", sa.Integer(), nullable=False, server_default="50"))
        batch.add_column(sa.Column("preempt_requested_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("preemptions", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("max_gpus", sa.Float(), nullable=True))
        batch.add_column(sa.Column("max_cpus", sa.Float(), nullable=True))
        batch.add_column(sa.Column("max_running_jobs", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("weight", sa.Float(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("preemptible", sa.Boolean(), nullable=False, server_default=sa.true()))
    op.create_table(
        "project_usage",
        sa.Column("project_id", sa.String(128), primary_key=True),
        sa.Column("cpu_seconds", sa.Float(), nullable=False),
        sa.Column("gpu_seconds", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("project_usage")
    with op.batch_alter_table("projects") as batch:
        for name in ("preemptible", "weight", "max_running_jobs", "max_cpus", "max_gpus"):
            batch.drop_column(name)
    with op.batch_alter_table("jobs") as batch:
        for name in ("preemptions", "preempt_requested_at", "priority"):
            batch.drop_column(name)
