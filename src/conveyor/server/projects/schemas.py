"""The JSON shapes of the projects API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from conveyor.server.models.membership import Role
from conveyor.server.models.project import Visibility


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    git_url: str = Field(min_length=1, max_length=4000)
    default_branch: str = Field(default="main", min_length=1, max_length=255)
    pipeline_path: str = Field(default=".conveyor.yml", min_length=1, max_length=500)
    branch_filter: str = Field(default="", max_length=4000)
    """Comma-separated globs such as `main,release/*`; empty: every branch."""
    build_command: str | None = Field(default=None, max_length=10_000)
    visibility: Visibility = Visibility.PRIVATE
    concurrency_limit: int | None = Field(default=None, ge=1, le=10_000)


class ProjectUpdate(BaseModel):
    """Fields to change; the ones left out stay as they are (send null to clear
    `build_command` or `concurrency_limit`)."""

    model_config = ConfigDict(extra="forbid")

    git_url: str | None = Field(default=None, min_length=1, max_length=4000)
    default_branch: str | None = Field(default=None, min_length=1, max_length=255)
    pipeline_path: str | None = Field(default=None, min_length=1, max_length=500)
    branch_filter: str | None = Field(default=None, max_length=4000)
    build_command: str | None = Field(default=None, max_length=10_000)
    visibility: Visibility | None = None
    concurrency_limit: int | None = Field(default=None, ge=1, le=10_000)


class ProjectRead(BaseModel):
    id: int
    name: str
    git_url: str
    """Without credentials: a user or token in the URL is shown as `***`."""
    default_branch: str
    pipeline_path: str
    branch_filter: str
    build_command: str | None
    visibility: Visibility
    concurrency_limit: int | None
    owner: str | None
    created_at: datetime


class MemberPut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role


class MemberRead(BaseModel):
    user: str
    role: Role
    created_at: datetime
