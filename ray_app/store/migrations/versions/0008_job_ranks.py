"""Jobs as gangs of ranks (issue 27): the job's `workers` and `placement_strategy`, every rank's
process on its attempt's row (`ranks`), and the rank that printed each log line.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # existing jobs were single processes: one worker, rank 0
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("workers", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("placement_strategy", sa.String(8), nullable=False, server_default="PACK"))
    with op.batch_alter_table("job_attempts") as batch:
        batch.add_column(sa.Column("ranks", sa.JSON(), nullable=True))
    with op.batch_alter_table("job_logs") as batch:
        batch.add_column(sa.Column("rank", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("job_logs") as batch:
        batch.drop_column("rank")
    with op.batch_alter_table("job_attempts") as batch:
        batch.drop_column("ranks")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("placement_strategy")
        batch.drop_column("workers")
