from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from conveyor.pipeline.plan import ArchiveFormat, HashAlgorithm
from conveyor.server.db.base import Base, UTCDateTime, enum_type, utcnow


class Artifact(Base):
    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    relative_path: Mapped[str] = mapped_column(Text)
    """Relative to the artifact root (`<project>/<run>/<job>/<file>`), never absolute."""
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    hash_algorithm: Mapped[HashAlgorithm] = mapped_column(
        enum_type(HashAlgorithm, "hash_algorithm"), default=HashAlgorithm.SHA256
    )
    hash_value: Mapped[str | None] = mapped_column(String(128))
    """The digest the pipeline asked for (`hash_algorithm`), as 7-Zip prints it."""
    archive_format: Mapped[ArchiveFormat] = mapped_column(
        enum_type(ArchiveFormat, "archive_format"), default=ArchiveFormat.NONE
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
