from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.server.db.base import Base, UTCDateTime, utcnow
from conveyor.server.db.dialect import json_type


class TokenScope(StrEnum):
    READ = "read"
    """Read what the user may read."""
    WRITE = "write"
    """Act as the user: trigger, cancel, retry, manage."""


class ApiToken(Base):
    """A bearer token of a user. Only the sha256 of the token is kept; `prefix` (the
    token's public first part) finds the row without scanning every hash."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(json_type(), default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
