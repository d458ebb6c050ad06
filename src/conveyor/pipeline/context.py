"""What triggered a run: the facts a pipeline is compiled against."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class TriggerContext:
    event: str
    """push, tag, pull_request, manual, cron or api."""
    branch: str | None
    tag: str | None
    commit_sha: str
    project: str = "project"
    run_number: int = 1
    actor: str = ""
    created: datetime = field(default_factory=_now)
    build_hash: str = ""
    """AMS-Build's `{build_hash}`: a hash unique to this build (the commit sha if empty)."""
    default_image: str | None = None
    """Image for AMS-Build and zero-config jobs that name none."""
