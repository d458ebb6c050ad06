"""JSON shapes of the logs API."""

from __future__ import annotations

from pydantic import BaseModel, Field


class LogLines(BaseModel):
    start: int
    """The line number (0-based) of the first line returned."""
    lines: list[str]
    """The lines, masked, without line endings; invalid UTF-8 replaced by U+FFFD."""
    total: int
    """Lines of the log so far (counting an unterminated last one)."""
    times: list[int | None] = Field(default_factory=list)
    """When each line started, in ms since the epoch (the agent's clock when it read
    the line, or the server's when it arrived from an older agent); null when not
    known. One per line of `lines`."""
