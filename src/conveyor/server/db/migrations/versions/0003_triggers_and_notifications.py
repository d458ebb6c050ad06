"""Triggers and notifications: polling, cron schedules, notification hooks and their
deliveries, forge links for commit statuses (issue 5, part W2).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

Frozen like 0001: types are spelled out, not imported from the models.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

UTC_TIMESTAMP = sa.DateTime(timezone=True)
JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "forge_links",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "github",
                "gitlab",
                "gitea",
                "bitbucket",
                name="forge_kind",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("api_base_url", sa.Text(), nullable=False),
        sa.Column("repository", sa.String(length=500), nullable=False),
        sa.Column("token_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("context", sa.String(length=100), nullable=False),
        sa.Column("created_at", UTC_TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_forge_links_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("project_id", name=op.f("pk_forge_links")),
    )
    op.create_table(
        "notification_hooks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "discord",
                "slack",
                "webhook",
                "email",
                name="hook_kind",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("triggers", JSON_DOCUMENT, nullable=False),
        sa.Column("template", sa.Text(), nullable=True),
        sa.Column("username", sa.String(length=80), nullable=True),
        sa.Column("secret_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTC_TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_notification_hooks_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_hooks")),
    )
    with op.batch_alter_table("notification_hooks", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_notification_hooks_project_id"), ["project_id"], unique=False
        )

    op.create_table(
        "project_polls",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("interval_seconds", sa.Integer(), nullable=True),
        sa.Column("heads", JSON_DOCUMENT, nullable=True),
        sa.Column("next_poll_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("last_polled_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_project_polls_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("project_id", name=op.f("pk_project_polls")),
    )
    with op.batch_alter_table("project_polls", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_project_polls_next_poll_at"), ["next_poll_at"], unique=False
        )

    op.create_table(
        "notification_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column(
            "channel",
            sa.Enum(
                "hook",
                "commit_status",
                name="channel",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("hook_id", sa.Integer(), nullable=True),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("trigger", sa.String(length=32), nullable=False),
        sa.Column("context", JSON_DOCUMENT, nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "queued",
                "sent",
                "failed",
                name="delivery_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("response_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("finished_at", UTC_TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(
            ["hook_id"],
            ["notification_hooks.id"],
            name=op.f("fk_notification_deliveries_hook_id_notification_hooks"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_notification_deliveries_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
            name=op.f("fk_notification_deliveries_run_id_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_deliveries")),
        sa.UniqueConstraint(
            "channel",
            "hook_id",
            "run_id",
            "trigger",
            "project_id",
            name=op.f("uq_notification_deliveries_channel_hook_id_run_id_trigger_project_id"),
        ),
    )
    with op.batch_alter_table("notification_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_notification_deliveries_hook_id"), ["hook_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_notification_deliveries_project_id"), ["project_id"], unique=False
        )
        batch_op.create_index(
            "ix_notification_deliveries_status_next_attempt_at",
            ["status", "next_attempt_at"],
            unique=False,
        )

    op.create_table(
        "schedules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("cron", sa.String(length=200), nullable=False),
        sa.Column("branch", sa.String(length=255), nullable=True),
        sa.Column("variables", JSON_DOCUMENT, nullable=False),
        sa.Column("time_zone", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("next_due_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("last_due_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("last_run_id", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", UTC_TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["last_run_id"],
            ["runs.id"],
            name=op.f("fk_schedules_last_run_id_runs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_schedules_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
    )
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_schedules_next_due_at"), ["next_due_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_schedules_project_id"), ["project_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_schedules_project_id"))
        batch_op.drop_index(batch_op.f("ix_schedules_next_due_at"))

    op.drop_table("schedules")
    with op.batch_alter_table("notification_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_notification_deliveries_status_next_attempt_at")
        batch_op.drop_index(batch_op.f("ix_notification_deliveries_project_id"))
        batch_op.drop_index(batch_op.f("ix_notification_deliveries_hook_id"))

    op.drop_table("notification_deliveries")
    with op.batch_alter_table("project_polls", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_project_polls_next_poll_at"))

    op.drop_table("project_polls")
    with op.batch_alter_table("notification_hooks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notification_hooks_project_id"))

    op.drop_table("notification_hooks")
    op.drop_table("forge_links")
