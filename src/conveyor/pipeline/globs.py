"""Branch globs: `*` matches within one path segment, `**` across segments."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache


class GlobSyntaxError(ValueError):
    """A branch pattern that is not a valid glob (an unclosed `[`, an empty pattern)."""


@lru_cache(maxsize=512)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """The regular expression for a branch glob; raises `GlobSyntaxError`.

    `**` matches any characters including `/`, `*` any characters but `/`, `?` one
    character but `/`, `[abc]`/`[!abc]` one character of (or not of) a set.
    """
    if not pattern:
        raise GlobSyntaxError("a branch pattern cannot be empty")
    regex = ""
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**/", index):
            # `release/**/hotfix` also matches `release/hotfix`.
            regex += "(?:.*/)?"
            index += 3
        elif pattern.startswith("**", index):
            regex += ".*"
            index += 2
        elif char == "*":
            regex += "[^/]*"
            index += 1
        elif char == "?":
            regex += "[^/]"
            index += 1
        elif char == "[":
            end = pattern.find("]", index + 2)
            if end == -1:
                raise GlobSyntaxError(
                    f"`[` at position {index + 1} of {pattern!r} is never closed; "
                    "write `[[]` for a literal `[`"
                )
            members = pattern[index + 1 : end]
            negate = members.startswith("!")
            if negate:
                members = members[1:]
            body = "".join("\\" + c if c in "\\^]" else c for c in members)
            regex += f"[^/{body}]" if negate else f"[{body}]"
            index = end + 1
        else:
            regex += re.escape(char)
            index += 1
    return re.compile(regex)


def branch_matches(branch: str, patterns: Sequence[str]) -> bool:
    """True when `branch` matches at least one glob of `patterns`."""
    return any(compile_glob(pattern).fullmatch(branch) for pattern in patterns)
