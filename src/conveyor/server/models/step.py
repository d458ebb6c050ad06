from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.protocol.status import Status
from conveyor.server.db.base import Base, UTCDateTime, enum_type


class Step(Base):
    __tablename__ = "steps"
    __table_args__ = (UniqueConstraint("job_id", "index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column()
    """Position in the job's plan, from 0."""
    name: Mapped[str] = mapped_column(String(255))
    status: Mapped[Status] = mapped_column(enum_type(Status, "status"), default=Status.QUEUED)
    exit_code: Mapped[int | None] = mapped_column()
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    log_line_count: Mapped[int] = mapped_column(default=0)
    log_byte_size: Mapped[int] = mapped_column(default=0)
