from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.server.db.base import Base, UTCDateTime, enum_type, utcnow
from conveyor.server.db.dialect import json_type


class HookKind(StrEnum):
    DISCORD = "discord"
    SLACK = "slack"
    WEBHOOK = "webhook"
    EMAIL = "email"


class NotificationTrigger(StrEnum):
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    FIXED = "fixed"
    """Success after a failed run of the same branch."""
    BROKEN = "broken"
    """Failure after a successful run of the same branch."""
    FINISHED = "finished"
    TEST = "test"
    """Only for `POST .../test`; never chosen by a hook."""


class NotificationHook(Base):
    """A project's outbound notification: where to, on which run events, what text."""

    __tablename__ = "notification_hooks"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[HookKind] = mapped_column(enum_type(HookKind, "hook_kind"))
    target: Mapped[str] = mapped_column(Text)
    """A URL (discord, slack, webhook) or comma-separated addresses (email)."""
    triggers: Mapped[list[str]] = mapped_column(json_type(), default=list)
    template: Mapped[str | None] = mapped_column(Text)
    username: Mapped[str | None] = mapped_column(String(80))
    """Discord only: the name the message is posted under."""
    secret_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    """Webhook only: the HMAC key, encrypted with the secrets cipher."""
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
