"""Helpers shared by the pipeline tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from conveyor.pipeline import TriggerContext


@pytest.fixture
def push_to() -> Callable[..., TriggerContext]:
    """push_to("main", event=..., ...) -> a TriggerContext for a push at a fixed commit."""

    def make(branch: str | None = "main", **fields: object) -> TriggerContext:
        values: dict[str, object] = {
            "event": "push",
            "branch": branch,
            "tag": None,
            "commit_sha": "0123456789abcdef0123456789abcdef01234567",
            "project": "exampleProject",
            "run_number": 7,
            "actor": "ada",
            "created": datetime(2020, 8, 19, 1, 50, 5, tzinfo=UTC),
            "build_hash": "c9bffcd6309225d86d2ff455f454d8ab9ec538cb",
        }
        values.update(fields)
        return TriggerContext(**values)  # type: ignore[arg-type]

    return make
