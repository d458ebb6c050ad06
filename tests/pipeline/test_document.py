from __future__ import annotations

import pytest

from conveyor.pipeline import PipelineError
from conveyor.pipeline.document import Position, format_path, load_json, load_yaml

YAML_TEXT = """\
image: debian:bookworm
steps:
  - name: test
    timeout: 10m
  - {name: lint, commands: [ruff, mypy]}
"""


class TestLoadYaml:
    def test_builds_plain_data(self) -> None:
        document = load_yaml(YAML_TEXT, ".conveyor.yml")
        assert document.data == {
            "image": "debian:bookworm",
            "steps": [
                {"name": "test", "timeout": "10m"},
                {"name": "lint", "commands": ["ruff", "mypy"]},
            ],
        }

    def test_remembers_where_values_and_keys_are(self) -> None:
        document = load_yaml(YAML_TEXT, ".conveyor.yml")
        assert document.position_of(("image",)) == Position(1, 8)
        assert document.position_of(("image",), at_key=True) == Position(1, 1)
        assert document.position_of(("steps", 0, "timeout")) == Position(4, 14)
        assert document.position_of(("steps", 0, "timeout"), at_key=True) == Position(4, 5)
        assert document.position_of(("steps", 1, "commands", 1)) == Position(5, 35)

    def test_missing_path_is_placed_at_its_nearest_parent(self) -> None:
        document = load_yaml(YAML_TEXT, ".conveyor.yml")
        assert document.position_of(("steps", 0, "commands")) == Position(3, 5)

    def test_duplicate_key_is_a_problem_at_the_second_key(self) -> None:
        document = load_yaml("image: a\nenv: {}\nimage: b\n", "p.yml")
        [problem] = document.problems
        assert str(problem) == (
            "p.yml:3:1: image: duplicate key `image` (first given at line 1, column 1); "
            "keep only one"
        )

    def test_duplicate_key_inside_a_flow_mapping_is_found(self) -> None:
        document = load_yaml("env: {A: 1, B: 2, A: 3}\n", "p.yml")
        assert [(p.line, p.column, p.path) for p in document.problems] == [(1, 19, "env.A")]

    def test_merge_keys_are_not_duplicates_and_own_keys_win(self) -> None:
        text = "base: &base {image: a, timeout: 1m}\nstep:\n  <<: *base\n  image: b\n"
        document = load_yaml(text, "p.yml")
        assert document.problems == []
        assert document.data == {
            "base": {"image": "a", "timeout": "1m"},
            "step": {"image": "b", "timeout": "1m"},
        }

    def test_keys_stay_text_even_where_yaml_would_make_booleans(self) -> None:
        document = load_yaml("on: push\nON: 1\n2: x\n", "p.yml")
        assert document.data == {"on": "push", "ON": 1, "2": "x"}

    def test_numbers_remember_how_they_were_written(self) -> None:
        document = load_yaml("matrix: {PY: [3.10, 3.12]}\n", "p.yml")
        assert document.data == {"matrix": {"PY": [3.1, 3.12]}}
        assert document.number_text[("matrix", "PY", 0)] == "3.10"

    def test_syntax_error_gives_its_line_and_column(self) -> None:
        with pytest.raises(PipelineError) as caught:
            load_yaml("image: a\nenv: x: y\n", "p.yml")
        assert str(caught.value) == "p.yml:2:7: invalid YAML: mapping values are not allowed here"

    def test_tab_indentation_is_a_syntax_error_at_the_tab(self) -> None:
        with pytest.raises(PipelineError) as caught:
            load_yaml("steps:\n\t- a\n", "p.yml")
        assert str(caught.value).startswith("p.yml:2:1: invalid YAML: found character '\\t'")

    def test_more_than_one_document_is_an_error(self) -> None:
        with pytest.raises(
            PipelineError,
            match=r"p\.yml:2:1: invalid YAML: expected a single document in the stream at "
            r"line 1, column 1, but found another document",
        ):
            load_yaml("a: 1\n---\nb: 2\n", "p.yml")

    def test_alias_bomb_is_refused(self) -> None:
        lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
        lines += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 7)]
        with pytest.raises(PipelineError, match="more than 200000 values"):
            load_yaml("\n".join(lines), "p.yml")

    def test_empty_text_is_no_data(self) -> None:
        assert load_yaml("", "p.yml").data is None


class TestLoadJson:
    def test_places_values_in_json_indented_with_tabs(self) -> None:
        document = load_json('{\n\t"docker": {\n\t\t"image": "x"\n\t}\n}\n', "pipeline.json")
        assert document.data == {"docker": {"image": "x"}}
        assert document.position_of(("docker", "image")) == Position(3, 12)
        assert document.position_of(("docker", "image"), at_key=True) == Position(3, 3)

    def test_json_syntax_error_has_line_and_column(self) -> None:
        with pytest.raises(PipelineError) as caught:
            load_json('{\n  "a": 1,\n}\n', "pipeline.json")
        assert str(caught.value) == (
            "pipeline.json:3:1: invalid JSON: Expecting property name enclosed in double quotes"
        )

    def test_duplicate_json_key_is_a_problem(self) -> None:
        document = load_json('{"a": 1, "a": 2}', "pipeline.json")
        assert [(p.line, p.column) for p in document.problems] == [(1, 10)]

    def test_values_come_from_json_not_yaml(self) -> None:
        # YAML 1.1 reads 1e3 as text; JSON says it is a number.
        assert load_json('{"n": 1e3}', "pipeline.json").data == {"n": 1000.0}


class TestFormatPath:
    def test_joins_keys_with_dots_and_indexes_in_brackets(self) -> None:
        assert format_path(("steps", 2, "timeout")) == "steps[2].timeout"
        assert format_path(("prepare-build", "master-dir-commands", 0)) == (
            "prepare-build.master-dir-commands[0]"
        )
        assert format_path(()) == ""
