from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.server.db.base import Base, UTCDateTime, enum_type, utcnow


class ForgeKind(StrEnum):
    GITHUB = "github"
    GITLAB = "gitlab"
    GITEA = "gitea"
    BITBUCKET = "bitbucket"


class ForgeLink(Base):
    """Where a project's commit statuses are reported: the forge, its API and a token."""

    __tablename__ = "forge_links"

    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[ForgeKind] = mapped_column(enum_type(ForgeKind, "forge_kind"))
    api_base_url: Mapped[str] = mapped_column(Text)
    repository: Mapped[str] = mapped_column(String(500))
    """`owner/name` (GitHub, Gitea, Bitbucket workspace/slug) or GitLab's project path."""
    token_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    context: Mapped[str] = mapped_column(String(100), default="conveyor")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
