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
        # The lease reaper: running jobs whose lease ran out.
        Index("ix_jobs_lease", "status", "lease_expires_at"),
        # Claims waiting for a back-off: the next job to come due. Partial (`WHERE
        # claimable_at IS NOT NULL`, migration 0004), so that it holds only the few jobs
        # in a back-off and the claim's own query (which takes jobs whose `claimable_at`
        # is NULL) cannot use it in place of `ix_jobs_queue`. The predicate is not
        # repeated here: a `postgresql_where` would load SQLAlchemy's PostgreSQL dialect
        # (2 MiB) into a server on SQLite, and Alembic does not compare predicates.
        Index("ix_jobs_claimable", "claimable_at"),
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
    """The plan's job timeout; the server ends the job (`error`) when its agent has not
    reported this long (plus a grace) after the start."""
    claimable_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """Earliest time a queued job may be claimed: set when it goes back to the queue
    after its agent was lost (exponential back-off); None: at once."""
    error_message: Mapped[str | None] = mapped_column(Text)


# The queue, in the order claims read it (highest priority first, then oldest, then
# lowest id), so that a claim reads a short page from its start however long it is.
# Declared here, not in `__table_args__`, for the DESC of the priority column.
Index("ix_jobs_queue", Job.status, Job.priority.desc(), Job.queued_at, Job.id)
