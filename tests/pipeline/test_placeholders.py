from __future__ import annotations

import pytest

from conveyor.pipeline.placeholders import (
    PlaceholderError,
    check_placeholders,
    fill_placeholders,
)


class TestFillPlaceholders:
    def test_replaces_each_known_name(self) -> None:
        values = {"project": "game", "build_index": "4"}
        assert fill_placeholders("{project}-{build_index}/{project}", values) == "game-4/game"

    def test_double_braces_are_literal(self) -> None:
        assert fill_placeholders("echo {{x}} ${{HOME}}", {}) == "echo {x} ${HOME}"

    def test_dashed_names_work(self) -> None:
        assert fill_placeholders("{project-dest}/x", {"project-dest": "/src"}) == "/src/x"

    def test_unknown_name_raises(self) -> None:
        with pytest.raises(PlaceholderError, match=r"unknown placeholder `\{who\}`"):
            fill_placeholders("{who}", {"actor": "a"})


class TestCheckPlaceholders:
    def test_lists_every_unknown_name_with_the_known_ones(self) -> None:
        assert check_placeholders("{a} {b} {c}", ["b"]) == [
            "unknown placeholder `{a}`; known are {b} (write {{ for a literal brace)",
            "unknown placeholder `{c}`; known are {b} (write {{ for a literal brace)",
        ]

    def test_format_specs_are_refused(self) -> None:
        assert check_placeholders("{created:%Y}", ["created"]) == [
            "placeholder `{created...}` has a format; write just `{created}`"
        ]

    def test_attribute_access_is_an_unknown_name(self) -> None:
        assert check_placeholders("{project.name}", ["project"])[0].startswith(
            "unknown placeholder `{project.name}`"
        )

    def test_single_closing_brace_is_an_error(self) -> None:
        assert check_placeholders("a } b", []) == [
            "Single '}' encountered in format string in 'a } b'; write {{ or }} for a literal brace"
        ]
