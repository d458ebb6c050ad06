"""JSON shapes of the agent administration API (the agent protocol itself is in
`conveyor.protocol.agents`)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


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


class AgentCreated(AgentRead):
    token: str
    """The agent's bearer token, shown this once; only its hash is kept."""
