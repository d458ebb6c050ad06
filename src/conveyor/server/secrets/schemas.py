"""The JSON shapes of the secrets API. Values go in, never out."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

MAX_SECRET_BYTES = 64 * 1024


class SecretPut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str = Field(min_length=1, max_length=MAX_SECRET_BYTES)


class SecretRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    created_at: datetime
    updated_at: datetime
