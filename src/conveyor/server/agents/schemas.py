"""JSON shapes of the agent administration API (the agent protocol itself is in
`conveyor.protocol.agents`)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from conveyor.protocol.status import Status


class AgentStatus(StrEnum):
    ONLINE = "online"
    """Enabled, and heard from (heartbeat or claim) within the lease duration."""
    OFFLINE = "offline"
    """Enabled, but silent for longer than the lease duration (or never registered), or
    found lost since it was last heard from: the lease reaper took a job from it."""
    DISABLED = "disabled"
    """Takes no new jobs; finishes the ones it runs."""


class AgentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")


class AgentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    labels: list[str]
    capacity: int
    running: int
    version: str
    platform: str
    enabled: bool
    created_at: datetime
    last_heartbeat_at: datetime | None
    """The last heartbeat or claim of the agent."""
    status: AgentStatus = AgentStatus.OFFLINE
    running_jobs: int = 0
    """Its jobs whose status is `running` (counted, not the agent's own tally)."""


class AgentDeleted(BaseModel):
    id: int
    name: str
    requeued_jobs: list[int]
    """Jobs it was running, put back in the queue (`?force=true` only)."""


class JobWaiting(BaseModel):
    job_id: int
    status: Status
    reason: str | None
    """Why the job is still queued, in words; None when it is not queued."""


class AgentCreated(AgentRead):
    token: str
    """The agent's bearer token, shown this once; only its hash is kept."""
