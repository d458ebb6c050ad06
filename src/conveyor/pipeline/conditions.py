"""`when:` conditions: on which branches and events a pipeline or a step runs."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict

from conveyor.pipeline.context import TriggerContext
from conveyor.pipeline.fieldtypes import Globs, choice, one_or_list
from conveyor.pipeline.globs import branch_matches


class Event(StrEnum):
    PUSH = "push"
    TAG = "tag"
    PULL_REQUEST = "pull_request"
    MANUAL = "manual"
    CRON = "cron"
    API = "api"


Events = Annotated[
    list[Annotated[Event, BeforeValidator(choice(Event, "an event"))]],
    BeforeValidator(one_or_list("an event or a list of events")),
]


class When(BaseModel):
    """Both conditions must hold; a missing one holds always.

    `branch` is checked only when the run has a branch: a tag run has none, so a
    pipeline limited to `main` still runs for tags when `event` lets tags in.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    branch: Globs | None = None
    event: Events | None = None

    def mismatch(self, ctx: TriggerContext) -> str | None:
        """Why this condition does not hold for `ctx`, or None when it holds."""
        if self.event is not None and ctx.event not in self.event:
            return f"event {ctx.event} is not one of {', '.join(self.event)}"
        if (
            self.branch is not None
            and ctx.branch is not None
            and not branch_matches(ctx.branch, self.branch)
        ):
            return f"branch {ctx.branch} does not match {', '.join(self.branch)}"
        return None
