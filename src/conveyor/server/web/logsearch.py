"""`GET /ui/steps/{id}/log/search?q=`: the line numbers of a step's log that contain a
text, for the log viewer's search.

Searched on the server, over the whole stored log (masked, colour codes removed, case
ignored): the page only ever holds the lines it shows, so it cannot search the rest.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from conveyor.server.deps import AppSettings, DbSession, RequestActor
from conveyor.server.logs import service as logs_service

router = APIRouter(include_in_schema=False)

MAX_MATCHES = 1000
_ESCAPE_SEQUENCE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class LogMatches(BaseModel):
    query: str
    lines: list[int]
    """1-based numbers of the matching lines, in order."""
    truncated: bool
    """More lines match than were returned (at most MAX_MATCHES)."""


@router.get("/ui/steps/{step_id}/log/search", response_model=LogMatches)
def search_log(
    step_id: int,
    session: DbSession,
    settings: AppSettings,
    actor: RequestActor,
    q: Annotated[str, Query(min_length=1, max_length=200)],
) -> LogMatches:
    context = logs_service.step_for_reading(session, actor, step_id)
    secrets = logs_service.step_secrets(session, settings, context.project)
    raw = logs_service.raw_log(settings, context.step, secrets)
    needle = q.casefold()
    found: list[int] = []
    number = 0
    carry = b""
    truncated = False
    for chunk in raw.chunks():
        pieces = (carry + chunk).split(b"\n")
        carry = pieces.pop()
        for piece in pieces:
            number += 1
            if _matches(piece, needle):
                if len(found) == MAX_MATCHES:
                    truncated = True
                    break
                found.append(number)
        if truncated:
            break
    if carry and not truncated and _matches(carry, needle):
        if len(found) < MAX_MATCHES:
            found.append(number + 1)
        else:
            truncated = True
    return LogMatches(query=q, lines=found, truncated=truncated)


def _matches(line: bytes, needle: str) -> bool:
    text = line.decode("utf-8", "replace")
    if "\x1b" in text:
        text = _ESCAPE_SEQUENCE.sub("", text)
    return needle in text.casefold()
