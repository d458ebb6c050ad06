"""Inbound webhooks: the delivery log, each project's webhook secret and its switch
for cancelling superseded runs, and runs that withhold secrets (fork pull requests).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30

Frozen like 0001: types are spelled out here, not imported from the models.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

UTC_TIMESTAMP = sa.DateTime(timezone=True)
JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("projects", sa.Column("webhook_secret_ciphertext", sa.LargeBinary()))
    op.add_column(
        "projects",
        sa.Column("cancel_superseded", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column(
        "runs",
        sa.Column("secrets_withheld", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("event", sa.String(length=100), nullable=False),
        sa.Column("delivery_id", sa.String(length=200), nullable=True),
        sa.Column("received_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("headers", JSON_DOCUMENT, nullable=False),
        sa.Column("body_size", sa.Integer(), nullable=False),
        sa.Column(
            "result",
            sa.Enum(
                "accepted",
                "refused",
                "duplicate",
                "ignored",
                "error",
                name="delivery_result",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("ref", sa.String(length=255), nullable=True),
        sa.Column("commit_sha", sa.String(length=64), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=True),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_webhook_deliveries_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
            name=op.f("fk_webhook_deliveries_run_id_runs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint(
            "project_id",
            "provider",
            "delivery_id",
            name=op.f("uq_webhook_deliveries_project_id_provider_delivery_id"),
        ),
    )
    op.create_index(
        "ix_webhook_deliveries_project_id_received_at",
        "webhook_deliveries",
        ["project_id", "received_at"],
        unique=False,
    )


def downgrade() -> None:
    # SQLite drops columns only by copying the table: batch mode does that there.
    op.drop_table("webhook_deliveries")
    with op.batch_alter_table("runs") as runs:
        runs.drop_column("secrets_withheld")
    with op.batch_alter_table("projects") as projects:
        projects.drop_column("cancel_superseded")
        projects.drop_column("webhook_secret_ciphertext")
