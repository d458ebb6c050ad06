from __future__ import annotations

from collections.abc import Callable

from conveyor.pipeline import TriggerContext
from conveyor.pipeline.conditions import Event, When

Push = Callable[..., TriggerContext]


class TestWhenMismatch:
    def test_empty_condition_always_holds(self, push_to: Push) -> None:
        assert When().mismatch(push_to("anything")) is None

    def test_single_values_are_accepted_as_lists(self, push_to: Push) -> None:
        when = When.model_validate({"branch": "main", "event": "push"})
        assert when.branch == ["main"]
        assert when.event == [Event.PUSH]
        assert when.mismatch(push_to("main")) is None

    def test_event_is_checked_before_branch(self, push_to: Push) -> None:
        when = When.model_validate({"branch": "main", "event": ["tag"]})
        assert when.mismatch(push_to("dev")) == "event push is not one of tag"

    def test_branch_mismatch_names_the_patterns(self, push_to: Push) -> None:
        when = When.model_validate({"branch": ["main", "release/*"]})
        assert when.mismatch(push_to("release/1/x")) == (
            "branch release/1/x does not match main, release/*"
        )

    def test_event_names_are_case_insensitive(self, push_to: Push) -> None:
        when = When.model_validate({"event": "Pull_Request"})
        assert when.mismatch(push_to("x", event="pull_request")) is None
