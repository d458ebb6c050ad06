"""Errors of the pipeline package.

One exception, `PipelineError`, carries every `Problem` found in a pipeline file, each
placed at its file, line and column, so a user fixes them all in one go:

    PipelineError                 the file is there but wrong (syntax, schema, placeholders)
    └── PipelineNotFoundError     there is no pipeline at all: no file and no zero-config rule
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a pipeline file.

    `line` and `column` are 1-based and point at the offending value (or at the key, for
    keys that should not be there); they are None when the problem has no place in a file.
    `file` is empty for problems about the repository rather than one file.
    `path` is the field path, such as `steps[2].timeout` (list indexes count from 0).
    """

    file: str
    line: int | None
    column: int | None
    path: str
    message: str = ""
    expected: str | None = None
    found: str | None = None

    def __str__(self) -> str:
        place = self.file
        if self.line is not None:
            place += f":{self.line}"
            if self.column is not None:
                place += f":{self.column}"
        parts = [place] if place else []
        if self.path:
            parts.append(self.path)
        parts.append(self.describe())
        return ": ".join(parts)

    def describe(self) -> str:
        """The problem without its place: message, then what was expected and found."""
        text = self.message
        if self.expected is not None:
            wanted = f"expected {self.expected}"
            if self.found is not None:
                wanted += f", found {self.found}"
            text = f"{text}: {wanted}" if text else wanted
        return text


class PipelineError(Exception):
    """A pipeline file is there but cannot be used; `problems` lists everything wrong."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = sorted(
            problems, key=lambda p: (p.file, p.line or 0, p.column or 0, p.path)
        )
        if not self.problems:
            raise ValueError("a PipelineError needs at least one problem")
        super().__init__("\n".join(str(problem) for problem in self.problems))


class PipelineNotFoundError(PipelineError):
    """The repository has no pipeline file and no zero-config rule applies."""
