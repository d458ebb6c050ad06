"""The JSON shapes of the polling and schedules API."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from conveyor.server.runs.schemas import VARIABLE_NAME

MIN_POLL_INTERVAL_SECONDS = 1


def check_cron(expression: str) -> str:
    # Loaded at the first schedule, not with the server (croniter and dateutil, 1 MiB).
    from croniter import croniter

    expression = " ".join(expression.split())
    if not croniter.is_valid(expression):
        raise ValueError(
            f"{expression!r} is not a cron expression: give five fields, minute hour "
            "day-of-month month day-of-week (e.g. '0 3 * * 1-5')"
        )
    return expression


def check_time_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(
            f"{name!r} is not an IANA time zone name (e.g. 'Europe/Berlin', 'UTC')"
        ) from error
    return name


def check_variables(variables: dict[str, str]) -> dict[str, str]:
    for name in variables:
        if not VARIABLE_NAME.fullmatch(name):
            raise ValueError(f"variable name {name!r} is not an environment variable name")
    return variables


class PollingPut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    interval_seconds: int | None = Field(ge=MIN_POLL_INTERVAL_SECONDS)
    """Seconds between `git ls-remote` calls; null turns polling off."""


class PollingRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    interval_seconds: int | None
    heads: dict[str, str] | None
    next_poll_at: datetime | None
    last_polled_at: datetime | None
    last_error: str | None


class ScheduleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cron: str = Field(min_length=1, max_length=200)
    branch: str | None = Field(default=None, min_length=1, max_length=255)
    variables: dict[str, str] = Field(default_factory=dict)
    time_zone: str | None = Field(default=None, max_length=64)
    """IANA name; null: the server's time zone (CONVEYOR_TIME_ZONE, else UTC)."""
    enabled: bool = True

    _cron = field_validator("cron")(check_cron)
    _variables = field_validator("variables")(check_variables)

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return None if value is None else check_time_zone(value)


class ScheduleUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cron: str | None = Field(default=None, min_length=1, max_length=200)
    branch: str | None = Field(default=None, min_length=1, max_length=255)
    variables: dict[str, str] | None = None
    time_zone: str | None = Field(default=None, max_length=64)
    enabled: bool | None = None

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else check_cron(value)

    @field_validator("variables")
    @classmethod
    def _variables(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return None if value is None else check_variables(value)

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return None if value is None else check_time_zone(value)


class ScheduleRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    cron: str
    branch: str | None
    variables: dict[str, str]
    time_zone: str
    enabled: bool
    next_due_at: datetime | None
    last_due_at: datetime | None
    last_run_id: int | None
    last_error: str | None
