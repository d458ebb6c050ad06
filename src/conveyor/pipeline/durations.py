"""Durations as pipeline files write them: `90s`, `10m`, `1h30m`, `2d`, or plain seconds."""

from __future__ import annotations

import math
import re

_UNIT_SECONDS = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")

DURATION_EXAMPLES = "a duration such as 90s, 10m or 1h"


def parse_duration(text: str | int | float) -> float:
    """Seconds in `text`: `90s`, `10m`, `1h`, `1h30m`, `2d`, or a plain number of seconds.

    Units go from largest to smallest, each at most once. Raises ValueError saying what
    was wrong and what a duration looks like.
    """
    if isinstance(text, bool):
        raise ValueError(f"expected {DURATION_EXAMPLES}, found {str(text).lower()}")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        spoken = re.sub(r"\s+", "", text).lower()
        if re.fullmatch(r"\d+(?:\.\d+)?", spoken):
            seconds = float(spoken)
        else:
            match = _DURATION.fullmatch(spoken)
            if not spoken or match is None:
                raise ValueError(f'expected {DURATION_EXAMPLES}, found "{text}"')
            seconds = float(
                sum(
                    int(amount) * _UNIT_SECONDS[unit]
                    for amount, unit in zip(match.groups(), "dhms", strict=True)
                    if amount is not None
                )
            )
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"expected {DURATION_EXAMPLES} (more than zero), found {text!r}")
    return seconds
