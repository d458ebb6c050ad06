from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.server.db.base import Base, UTCDateTime, enum_type, utcnow
from conveyor.server.db.dialect import json_type


class DeliveryResult(StrEnum):
    ACCEPTED = "accepted"
    """Signed, allowed, and handed to the trigger (`run_id` is set once the run exists)."""
    REFUSED = "refused"
    """Bad signature, an actor or branch the project does not build."""
    DUPLICATE = "duplicate"
    """A redelivery of a delivery id already received."""
    IGNORED = "ignored"
    """Nothing to build: a ping, a deleted branch, an event or action that starts nothing."""
    ERROR = "error"
    """Accepted, but the run could not be made (unreachable repository, unknown commit)."""


class WebhookDelivery(Base):
    """One request to `/hooks/...` of a known project, whatever became of it."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # NULL delivery ids (forges that send none, duplicates, refused deliveries) are
        # distinct from each other on both databases, so only real ids are unique.
        UniqueConstraint("project_id", "provider", "delivery_id"),
        Index("ix_webhook_deliveries_project_id_received_at", "project_id", "received_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(32))
    event: Mapped[str] = mapped_column(String(100), default="")
    """The forge's own event name (`push`, `Merge Request Hook`, `repo:push`...)."""
    delivery_id: Mapped[str | None] = mapped_column(String(200))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    headers: Mapped[dict[str, Any]] = mapped_column(json_type(), default=dict)
    """The request's headers, with signatures and tokens replaced by `[redacted]`."""
    body_size: Mapped[int] = mapped_column(default=0)
    result: Mapped[DeliveryResult] = mapped_column(enum_type(DeliveryResult, "delivery_result"))
    reason: Mapped[str] = mapped_column(Text, default="")
    ref: Mapped[str | None] = mapped_column(String(255))
    """The branch or tag the delivery named (the target branch of a pull request)."""
    commit_sha: Mapped[str | None] = mapped_column(String(64))
    actor: Mapped[str | None] = mapped_column(String(200))
    """The forge user who pushed or opened the pull request."""
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    pending_event: Mapped[str | None] = mapped_column(Text, default=None)
    """An accepted delivery's event (JSON) until its run, or the failure to make it, is
    recorded: what a server that stopped in between needs to make the run at its next
    start. NULL for every other delivery."""
