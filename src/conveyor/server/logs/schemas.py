"""JSON shapes of the logs API."""

from __future__ import annotations

from pydantic import BaseModel


class LogLines(BaseModel):
    start: int
    """The line number (0-based) of the first line returned."""
    lines: list[str]
    """The lines, masked, without line endings; invalid UTF-8 replaced by U+FFFD."""
    total: int
    """Lines of the log so far (counting an unterminated last one)."""
