from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.server.db.base import Base, UTCDateTime, enum_type, utcnow
from conveyor.server.db.dialect import json_type


class Visibility(StrEnum):
    PRIVATE = "private"
    """Members and admins only."""
    PUBLIC = "public"
    """Readable by every signed-in user, and anonymously if the server allows it."""


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    git_url: Mapped[str] = mapped_column(Text)
    default_branch: Mapped[str] = mapped_column(String(255), default="main")
    pipeline_path: Mapped[str] = mapped_column(String(500), default=".conveyor.yml")
    branch_filter: Mapped[str] = mapped_column(Text, default="")
    """Comma-separated globs (`main,release/*`); empty means every branch."""
    build_command: Mapped[str | None] = mapped_column(Text)
    webhook_actors: Mapped[list[str]] = mapped_column(json_type(), default=list)
    """Forge user names whose pushes and pull requests may trigger runs; empty: anyone."""
    visibility: Mapped[Visibility] = mapped_column(
        enum_type(Visibility, "visibility"), default=Visibility.PRIVATE
    )
    concurrency_limit: Mapped[int | None] = mapped_column()
    """Jobs of this project running at once; None: no limit."""
    owner_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    webhook_secret_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    """The webhook secret, Fernet-encrypted; made on first read of the webhook settings."""
    cancel_superseded: Mapped[bool] = mapped_column(default=False)
    """A new push run of a branch cancels the older queued or running push runs of it."""
