"""Webhook deliveries keep an accepted delivery's event until its run is made, so a
server that stopped between answering the forge and making the run makes it at its
next start.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08

Frozen like 0001: types are spelled out here, not imported from the models.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("webhook_deliveries", sa.Column("pending_event", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_column("pending_event")
