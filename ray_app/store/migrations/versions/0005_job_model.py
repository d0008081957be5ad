"""A job's model in MLflow: the registry name the user asked for (`register_as`) and what was
logged (`mlflow_model`: the run's model URI, the registered name and version, or the error).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("register_as", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("mlflow_model", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("mlflow_model")
        batch.drop_column("register_as")
