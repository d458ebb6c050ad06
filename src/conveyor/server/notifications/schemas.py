"""The JSON shapes of notification hooks, their deliveries and the forge link."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from conveyor.server.models.forge_link import ForgeKind
from conveyor.server.models.notification_delivery import DeliveryStatus
from conveyor.server.models.notification_hook import HookKind, NotificationTrigger

CHOOSABLE_TRIGGERS = [t for t in NotificationTrigger if t is not NotificationTrigger.TEST]


def _check_triggers(triggers: list[NotificationTrigger]) -> list[NotificationTrigger]:
    if NotificationTrigger.TEST in triggers:
        raise ValueError("'test' is not a trigger a hook can choose; use POST .../test")
    return list(dict.fromkeys(triggers))


class HookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: HookKind
    target: str = Field(min_length=3, max_length=2000)
    """URL (discord, slack, webhook) or comma-separated e-mail addresses (email)."""
    triggers: list[NotificationTrigger] = Field(
        default_factory=lambda: [NotificationTrigger.FAILED, NotificationTrigger.FIXED]
    )
    template: str | None = Field(default=None, max_length=4000)
    username: str | None = Field(default=None, min_length=1, max_length=80)
    secret: str | None = Field(default=None, min_length=8, max_length=500)
    enabled: bool = True

    _triggers = field_validator("triggers")(_check_triggers)

    @model_validator(mode="after")
    def _target_fits_kind(self) -> Self:
        if self.kind is HookKind.EMAIL:
            addresses = [a.strip() for a in self.target.split(",") if a.strip()]
            if not addresses or any("@" not in a or " " in a for a in addresses):
                raise ValueError("target: an email hook needs comma-separated addresses")
        elif not self.target.startswith(("http://", "https://")):
            raise ValueError(f"target: a {self.kind.value} hook needs an http(s) URL")
        if self.secret is not None and self.kind is not HookKind.WEBHOOK:
            raise ValueError("secret: only webhook hooks are signed")
        return self


class HookUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str | None = Field(default=None, min_length=3, max_length=2000)
    triggers: list[NotificationTrigger] | None = None
    template: str | None = Field(default=None, max_length=4000)
    username: str | None = Field(default=None, min_length=1, max_length=80)
    secret: str | None = Field(default=None, min_length=8, max_length=500)
    enabled: bool | None = None

    @field_validator("triggers")
    @classmethod
    def _triggers(cls, value: list[NotificationTrigger] | None) -> list[NotificationTrigger] | None:
        return None if value is None else _check_triggers(value)


class HookRead(BaseModel):
    id: int
    kind: HookKind
    target: str
    triggers: list[str]
    template: str | None
    username: str | None
    has_secret: bool
    enabled: bool
    created_at: datetime


class DeliveryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    hook_id: int | None
    run_id: int | None
    trigger: str
    status: DeliveryStatus
    attempts: int
    response_code: int | None
    error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    finished_at: datetime | None
    context: dict[str, Any]


class ForgeLinkPut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: ForgeKind
    api_base_url: str = Field(pattern=r"^https?://", max_length=2000)
    repository: str = Field(min_length=3, max_length=500, pattern=r"^[^/\s]+(/[^/\s]+)+$")
    token: str = Field(min_length=1, max_length=2000)
    context: str = Field(default="conveyor", min_length=1, max_length=100)


class ForgeLinkRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    kind: ForgeKind
    api_base_url: str
    repository: str
    context: str
