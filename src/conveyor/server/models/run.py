from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.protocol.status import Status
from conveyor.server.db.base import Base, UTCDateTime, enum_type, utcnow
from conveyor.server.db.dialect import json_type


class Run(Base):
    """One execution of a project's pipeline at one commit. `status` is written only
    by `runs/state.py`."""

    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("project_id", "number"),
        Index("ix_runs_status_created_at", "status", "created_at"),
        Index("ix_runs_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column()
    """1, 2, 3... within the project."""
    event: Mapped[str] = mapped_column(String(32))
    """push, tag, pull_request, manual, cron, api, poll."""
    branch: Mapped[str | None] = mapped_column(String(255))
    tag: Mapped[str | None] = mapped_column(String(255))
    commit_sha: Mapped[str] = mapped_column(String(64))
    commit_message: Mapped[str] = mapped_column(Text, default="")
    commit_author: Mapped[str] = mapped_column(String(320), default="")
    actor_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    actor_name: Mapped[str] = mapped_column(String(200), default="")
    """Who triggered it, kept even when the user is gone (or was a forge account)."""
    variables: Mapped[dict[str, Any]] = mapped_column(json_type(), default=dict)
    status: Mapped[Status] = mapped_column(enum_type(Status, "status"), default=Status.QUEUED)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error_message: Mapped[str | None] = mapped_column(Text)
    secrets_withheld: Mapped[bool] = mapped_column(default=False)
    """A pull request from a fork: its jobs get none of the project's secrets."""
