"""JSON shapes of the artifacts API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from conveyor.pipeline.plan import ArchiveFormat, HashAlgorithm


class ArtifactRead(BaseModel):
    id: int
    name: str
    size: int
    sha256: str
    hash_algorithm: HashAlgorithm
    hash: str | None
    """The digest the pipeline asked for (`hash_algorithm`), as 7-Zip prints it."""
    archive: ArchiveFormat
    job_id: int
    job_name: str
    created_at: datetime
    expires_at: datetime | None
    download_url: str
