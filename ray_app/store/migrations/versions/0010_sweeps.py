"""Sweeps (issue 28): the sweeps table, and on jobs the sweep a trial belongs to, its number, its
values and whether the sweep's scheduler stopped it early. Existing jobs are no trials.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _ts() -> sa.types.TypeEngine:
    # the impl of the application's UTCDateTime (a revision does not import the application)
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("num", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("project_id", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("stop_requested", sa.String(16)),
        sa.Column("best_job_id", sa.String(64)),
        sa.Column("registered_model", sa.JSON()),
        sa.Column("mlflow_parent_run_id", sa.String(128)),
        sa.Column("created_by", sa.String(64)),
        sa.Column("cancelled_by", sa.String(64)),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.Column("started_at", _ts()),
        sa.Column("finished_at", _ts()),
    )
    op.create_index("ix_sweeps_project_id", "sweeps", ["project_id"])
    op.create_index("ix_sweeps_state", "sweeps", ["state"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("sweep_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("sweep_trial", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("sweep_params", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("stopped_early", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index("ux_jobs_sweep_trial", "jobs", ["sweep_id", "sweep_trial"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_jobs_sweep_trial", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("stopped_early")
        batch.drop_column("sweep_params")
        batch.drop_column("sweep_trial")
        batch.drop_column("sweep_id")
    op.drop_index("ix_sweeps_state", table_name="sweeps")
    op.drop_index("ix_sweeps_project_id", table_name="sweeps")
    op.drop_table("sweeps")
