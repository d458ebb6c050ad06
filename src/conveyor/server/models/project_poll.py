from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Text
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.server.db.base import Base, UTCDateTime
from conveyor.server.db.dialect import json_type


class ProjectPoll(Base):
    """Polling of a project's repository (`git ls-remote`), for repositories without a
    webhook: how often, and which branch heads were seen last."""

    __tablename__ = "project_polls"

    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    interval_seconds: Mapped[int | None] = mapped_column()
    """Seconds between polls; None: polling is off."""
    heads: Mapped[dict[str, str] | None] = mapped_column(json_type())
    """Branch -> sha seen at the last poll; None until the first poll has recorded them."""
    next_poll_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    last_polled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
