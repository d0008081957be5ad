"""Teams (issue 29): users, personal API tokens (hashed), projects and their members, the audit
log; jobs record who created and who cancelled them; datasets belong to a project.

What was there moves in without loss: the bootstrap admin (the user VTP_API_TOKENS act as) is
made, every project_id a job names becomes a project record (with `default`), and datasets,
which had no project, go to `default`.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BOOTSTRAP_USER = "admin"  # teams/policy.BOOTSTRAP_USER, as of this revision
DEFAULT_PROJECT = "default"


def _ts() -> sa.types.TypeEngine:
    # the impl of the application's UTCDateTime (a revision does not import the application)
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    users = op.create_table(
        "users",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column("platform_admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("created_by", sa.String(64)),
        sa.Column("disabled_at", _ts()),
        sa.Column("external_issuer", sa.String(255)),
        sa.Column("external_subject", sa.String(255)),
        sa.UniqueConstraint("external_issuer", "external_subject", name="uq_users_external"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.String(64), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("last_used_at", _ts()),
        sa.Column("expires_at", _ts()),
        sa.Column("revoked_at", _ts()),
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])
    projects = op.create_table(
        "projects",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("created_by", sa.String(64)),
    )
    op.create_table(
        "project_members",
        sa.Column("project_id", sa.String(128), sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("user_id", sa.String(64), sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("added_at", _ts(), nullable=False),
        sa.Column("added_by", sa.String(64)),
    )
    op.create_index("ix_project_members_user_id", "project_members", ["user_id"])
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("at", _ts(), nullable=False),
        sa.Column("user_id", sa.String(64)),
        sa.Column("token_name", sa.String(64)),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("path", sa.String(512), nullable=False),
        sa.Column("resource", sa.String(300)),
        sa.Column("project_id", sa.String(128)),
        sa.Column("outcome", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
    )
    for column in ("at", "user_id", "project_id"):
        op.create_index(f"ix_audit_log_{column}", "audit_log", [column])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("created_by", sa.String(64)))
        batch.add_column(sa.Column("cancelled_by", sa.String(64)))
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("project_id", sa.String(128), nullable=False, server_default=DEFAULT_PROJECT))
        batch.add_column(sa.Column("created_by", sa.String(64)))
    op.create_index("ix_datasets_project_id", "datasets", ["project_id"])

    conn = op.get_bind()
    now = datetime.now(UTC)
    if conn.dialect.name == "sqlite":  # as UTCDateTime stores it there: UTC without an offset
        now = now.replace(tzinfo=None)
    op.bulk_insert(users, [{"id": BOOTSTRAP_USER, "display_name": "Bootstrap admin (VTP_API_TOKENS)",
                            "platform_admin": True, "created_at": now}])
    named = {row[0] for row in conn.execute(sa.text("SELECT DISTINCT project_id FROM jobs"))}
    op.bulk_insert(projects, [{"id": p, "description": "", "created_at": now, "created_by": BOOTSTRAP_USER}
                              for p in sorted(named | {DEFAULT_PROJECT})])


def downgrade() -> None:
    op.drop_index("ix_datasets_project_id", "datasets")
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("created_by")
        batch.drop_column("project_id")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("cancelled_by")
        batch.drop_column("created_by")
    for table in ("audit_log", "project_members", "projects", "api_tokens", "users"):
        op.drop_table(table)
