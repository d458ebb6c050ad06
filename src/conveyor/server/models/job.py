from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.protocol.status import Status
from conveyor.server.db.base import Base, UTCDateTime, enum_type, utcnow
from conveyor.server.db.dialect import json_type


class Job(Base):
    """One unit of work placed on one agent: a `JobPlan` and its place in the queue."""

    __tablename__ = "jobs"
    __table_args__ = (
        # The queue: queued jobs, highest priority first, then oldest.
        Index("ix_jobs_queue", "status", "priority", "queued_at"),
        # The lease reaper: running jobs whose lease ran out.
        Index("ix_jobs_lease", "status", "lease_expires_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    matrix: Mapped[dict[str, str]] = mapped_column(json_type(), default=dict)
    plan: Mapped[dict[str, Any]] = mapped_column(json_type())
    """`conveyor.pipeline.plan.JobPlan.model_dump(mode="json")`."""
    labels: Mapped[list[str]] = mapped_column(json_type(), default=list)
    priority: Mapped[int] = mapped_column(default=0)
    """Higher runs first."""
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=3)
    status: Mapped[Status] = mapped_column(enum_type(Status, "status"), default=Status.QUEUED)
    agent_id: Mapped[int | None] = mapped_column(
        ForeignKey("agents.id", ondelete="SET NULL"), index=True
    )
    lease_id: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    timeout_seconds: Mapped[float | None] = mapped_column()
    error_message: Mapped[str | None] = mapped_column(Text)
