"""`{name}` placeholders, as AMS-Build fills them with Python's `str.format` (`{{` escapes)."""

from __future__ import annotations

import string
from collections.abc import Collection, Mapping


class PlaceholderError(ValueError):
    """A placeholder that is unknown or malformed; the message names it and how to fix it."""


def check_placeholders(text: str, known: Collection[str]) -> list[str]:
    """What is wrong with the placeholders of `text` (an empty list when all is well)."""
    try:
        pieces = list(string.Formatter().parse(text))
    except ValueError as error:
        return [f"{error} in {text!r}; write {{{{ or }}}} for a literal brace"]
    problems = []
    for _, name, format_spec, conversion in pieces:
        if name is None:
            continue
        if format_spec or conversion:
            problems.append(f"placeholder `{{{name}...}}` has a format; write just `{{{name}}}`")
        elif name not in known:
            problems.append(
                f"unknown placeholder `{{{name}}}`; known are "
                + ", ".join(f"{{{option}}}" for option in sorted(known))
                + " (write {{ for a literal brace)"
            )
    return problems


def fill_placeholders(text: str, values: Mapping[str, str]) -> str:
    """`text` with every `{name}` replaced; raises `PlaceholderError` for unknown names."""
    problems = check_placeholders(text, values.keys())
    if problems:
        raise PlaceholderError(problems[0])
    return "".join(
        literal + (values[name] if name is not None else "")
        for literal, name, _, _ in string.Formatter().parse(text)
    )
