"""The JSON shapes of the webhook settings and the delivery log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from conveyor.server.models.webhook_delivery import DeliveryResult


class ProviderHint(BaseModel):
    """How to set the webhook up in one forge."""

    provider: str
    url: str
    signing: str
    """Where the secret goes in the forge's form, or which header carries it."""
    events: list[str]


class WebhookSettings(BaseModel):
    url: str
    """The address that detects the forge from the headers."""
    secret: str
    actors: list[str]
    """Forge users whose deliveries may start runs; empty: anyone."""
    cancel_superseded: bool
    providers: list[ProviderHint]


class WebhookSettingsUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    actors: list[str] | None = Field(default=None, max_length=500)
    cancel_superseded: bool | None = None


class DeliveryRead(BaseModel):
    id: int
    provider: str
    event: str
    delivery_id: str | None
    received_at: datetime
    headers: dict[str, Any]
    body_size: int
    result: DeliveryResult
    reason: str
    ref: str | None
    commit_sha: str | None
    actor: str | None
    run_id: int | None


class DeliveryPage(BaseModel):
    items: list[DeliveryRead]
    page: int
    per_page: int
    total: int


class DeliveryAnswer(BaseModel):
    """What the forge is told about its delivery (forges show it in their logs)."""

    result: DeliveryResult
    reason: str
    delivery: int | None
    """The delivery's number in the project's delivery log."""
