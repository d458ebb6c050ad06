"""An index on the target of audit events: a run's history reads the events of one run.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23

Frozen like 0001: names are spelled out here, not imported from the models.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_audit_events_target", "audit_events", ["target_type", "target_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_audit_events_target", table_name="audit_events")
