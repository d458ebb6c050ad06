from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.server.db.base import Base, UTCDateTime, utcnow
from conveyor.server.db.dialect import json_type


class Agent(Base):
    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    labels: Mapped[list[str]] = mapped_column(json_type(), default=list)
    capacity: Mapped[int] = mapped_column(default=1)
    running: Mapped[int] = mapped_column(default=0)
    version: Mapped[str] = mapped_column(String(64), default="")
    platform: Mapped[str] = mapped_column(String(100), default="")
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    """sha256 of the agent's token; None for the embedded agent, which needs none."""
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lost_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """When the lease reaper last took a job from the agent because its lease ran out:
    the agent is offline from then until it is heard from again."""
