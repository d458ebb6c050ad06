"""The JSON shapes of the runs API: triggering, run queries, a run's history and the
tasks view."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from conveyor.protocol.status import Status

VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,199}$")
MAX_VARIABLES = 200


class TriggerRequest(BaseModel):
    """What to run: one of `branch`, `tag` or `sha` (none: the project's default
    branch), extra variables for the steps, and the job priority (higher first)."""

    model_config = ConfigDict(extra="forbid")

    branch: str | None = Field(default=None, min_length=1, max_length=255)
    tag: str | None = Field(default=None, min_length=1, max_length=255)
    sha: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{4,64}$")
    variables: dict[str, str] = Field(default_factory=dict)
    priority: int = Field(default=0, ge=-1000, le=1000)
    event: str = Field(default="api", pattern=r"^[a-z_]{1,32}$")
    """Set by the server (`api` for the API, `manual` for the UI); what API callers
    send here is replaced."""

    @model_validator(mode="after")
    def _one_ref_at_most(self) -> Self:
        given = [name for name in ("branch", "tag", "sha") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(
                f"give at most one of branch, tag and sha (got {' and '.join(given)}); "
                "none means the project's default branch"
            )
        return self

    @field_validator("variables")
    @classmethod
    def _variable_names(cls, variables: dict[str, str]) -> dict[str, str]:
        if len(variables) > MAX_VARIABLES:
            raise ValueError(f"at most {MAX_VARIABLES} variables")
        for name in variables:
            if not VARIABLE_NAME.fullmatch(name):
                raise ValueError(
                    f"variable name {name!r} is not an environment variable name: use "
                    "letters, digits and '_', not starting with a digit"
                )
        return variables


class StepRead(BaseModel):
    id: int
    index: int
    name: str
    status: Status
    exit_code: int | None
    started_at: datetime | None
    finished_at: datetime | None
    log_lines: int
    log_bytes: int


class JobRead(BaseModel):
    id: int
    name: str
    matrix: dict[str, str]
    status: Status
    labels: list[str]
    priority: int
    attempts: int
    max_attempts: int
    agent: str | None
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    error_message: str | None
    steps: list[StepRead]
    waiting_reason: str | None = None
    """Why a queued job waits (no matching agent online, agents full, the project's
    concurrency limit, or just its turn); None for jobs not queued."""


class RunSummary(BaseModel):
    id: int
    project: str
    number: int
    event: str
    branch: str | None
    tag: str | None
    commit_sha: str
    commit_message: str
    commit_author: str
    created_by: str
    status: Status
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    queued_seconds: float | None
    """How long the run waited: started - created (so far, while it is queued)."""
    duration_seconds: float | None
    """finished - started (so far, while it runs)."""
    error_message: str | None
    """Why the run ended in `error`, or why it was `skipped`."""


class RunDetail(RunSummary):
    variables: dict[str, Any]
    jobs: list[JobRead]


class RunPage(BaseModel):
    items: list[RunSummary]
    page: int
    per_page: int
    total: int


class TaskRead(BaseModel):
    """One line of the tasks view (AMS-Build's active and queued lists)."""

    run_id: int
    project: str
    number: int
    status: Status
    branch: str | None
    tag: str | None
    commit_sha: str
    commit_message: str
    created_by: str
    created_at: datetime
    started_at: datetime | None


class TasksView(BaseModel):
    active: list[TaskRead]
    queued: list[TaskRead]


class RunEventAction(StrEnum):
    """What happened to a run, in the words its history uses."""

    TRIGGERED = "triggered"
    STARTED = "started"
    REQUEUED = "requeued"
    CANCELLED = "cancelled"
    RETRIED = "retried"
    FINISHED = "finished"


class RunEventRead(BaseModel):
    """One line of a run's history (`GET /api/v1/runs/{id}/events`, oldest first)."""

    time: datetime
    actor: str
    """A user's name, or `webhook`, `schedule`, `agent <name>`, `system`."""
    action: RunEventAction
    details: str
    """The line in words, e.g. `push to main at 1a2b3c4d5e6f` or `failure after 1m 05s`."""
    job: str | None = None
    """The job it is about, for job events (`started`, `requeued`)."""
