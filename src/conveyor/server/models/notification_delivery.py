from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.server.db.base import Base, UTCDateTime, enum_type, utcnow
from conveyor.server.db.dialect import json_type


class DeliveryStatus(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"
    """Every attempt failed; nothing more is tried."""


class DeliveryChannel(StrEnum):
    HOOK = "hook"
    COMMIT_STATUS = "commit_status"


class NotificationDelivery(Base):
    """One message to send (a hook's notification or a commit status), with its
    attempts. The context is captured when the run event happens, so a retry later
    still says what was true then."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (
        UniqueConstraint("channel", "hook_id", "run_id", "trigger", "project_id"),
        Index("ix_notification_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    channel: Mapped[DeliveryChannel] = mapped_column(enum_type(DeliveryChannel, "channel"))
    hook_id: Mapped[int | None] = mapped_column(
        ForeignKey("notification_hooks.id", ondelete="CASCADE"), index=True
    )
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    trigger: Mapped[str] = mapped_column(String(32))
    context: Mapped[dict[str, Any]] = mapped_column(json_type(), default=dict)
    status: Mapped[DeliveryStatus] = mapped_column(
        enum_type(DeliveryStatus, "delivery_status"), default=DeliveryStatus.QUEUED
    )
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    response_code: Mapped[int | None] = mapped_column()
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
