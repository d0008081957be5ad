"""An index on jobs (updated_at, num): the job-list stream reads what changed since a position in
that order (store/reads.changed_jobs, GET /v1/stream/jobs), without scanning every job ever made.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

# revision identifiers, used by Alembic.
revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_updated_at", "jobs", ["updated_at", "num"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_jobs_updated_at", table_name="jobs")
