from __future__ import annotations

import pytest

from conveyor.pipeline import PipelineError, PipelineNotFoundError, Problem


class TestProblem:
    def test_renders_file_line_column_path_expected_and_found(self) -> None:
        problem = Problem(
            file=".conveyor.yml",
            line=12,
            column=14,
            path="steps[2].timeout",
            expected="a duration such as 90s, 10m or 1h",
            found='"ten minutes"',
        )
        assert str(problem) == (
            ".conveyor.yml:12:14: steps[2].timeout: expected a duration such as 90s, 10m or 1h,"
            ' found "ten minutes"'
        )

    def test_message_comes_before_expectation(self) -> None:
        problem = Problem("p.json", 1, 2, "a", message="bad value", expected="x", found="y")
        assert str(problem) == "p.json:1:2: a: bad value: expected x, found y"

    def test_problem_without_path_or_place_shows_only_what_is_known(self) -> None:
        assert str(Problem(".conveyor.yml", 3, 1, "", message="invalid YAML")) == (
            ".conveyor.yml:3:1: invalid YAML"
        )
        assert str(Problem("", None, None, "", message="no pipeline found")) == (
            "no pipeline found"
        )


class TestPipelineError:
    def test_lists_every_problem_one_per_line_in_file_order(self) -> None:
        error = PipelineError(
            [
                Problem("f.yml", 9, 3, "steps", message="second"),
                Problem("f.yml", 2, 5, "image", message="first"),
            ]
        )
        assert [problem.message for problem in error.problems] == ["first", "second"]
        assert str(error) == "f.yml:2:5: image: first\nf.yml:9:3: steps: second"

    def test_refuses_to_exist_without_problems(self) -> None:
        with pytest.raises(ValueError, match="at least one problem"):
            PipelineError([])

    def test_not_found_is_a_pipeline_error(self) -> None:
        assert issubclass(PipelineNotFoundError, PipelineError)
