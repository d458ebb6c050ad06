"""The statuses shared by runs, jobs and steps (DESIGN.md section 3)."""

from enum import StrEnum


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    WARNING = "warning"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    ERROR = "error"

    @property
    def finished(self) -> bool:
        return self not in (Status.QUEUED, Status.RUNNING)

    @property
    def passed(self) -> bool:
        """Finished in a way that lets the next step or a dependent job go on."""
        return self in (Status.SUCCESS, Status.WARNING, Status.SKIPPED)
