"""Queue robustness: the earliest claim time of a job put back after its agent was lost
(exponential back-off), when an agent was last found lost, and a queue index in the
exact order claims read it (priority descending, then queue time and id).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

Frozen like 0001: types are spelled out here, not imported from the models.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

UTC_TIMESTAMP = sa.DateTime(timezone=True)

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimable_at", UTC_TIMESTAMP, nullable=True))
        batch_op.drop_index("ix_jobs_queue")
        batch_op.create_index(
            "ix_jobs_queue",
            ["status", sa.text("priority DESC"), "queued_at", "id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_jobs_claimable",
            ["claimable_at"],
            unique=False,
            sqlite_where=sa.text("claimable_at IS NOT NULL"),
            postgresql_where=sa.text("claimable_at IS NOT NULL"),
        )
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lost_at", UTC_TIMESTAMP, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_column("lost_at")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_claimable")
        batch_op.drop_index("ix_jobs_queue")
        batch_op.create_index("ix_jobs_queue", ["status", "priority", "queued_at"], unique=False)
        batch_op.drop_column("claimable_at")
