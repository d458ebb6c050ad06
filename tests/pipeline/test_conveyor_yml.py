from __future__ import annotations

from collections.abc import Callable

import pytest

from conveyor.pipeline import PipelineError, TriggerContext
from conveyor.pipeline.conveyor_yml import MAX_MATRIX_JOBS, load_conveyor_yml
from conveyor.pipeline.plan import (
    ArchiveFormat,
    ArtifactPlan,
    CleanupPlan,
    ContainerOptions,
    HashAlgorithm,
    ServicePlan,
    StepKind,
    StepPlan,
)

Push = Callable[..., TriggerContext]

DESIGN_EXAMPLE = """\
image: debian:bookworm          # default image of every step (docker backend)
env: {APP_ENV: ci}
when: {branch: [main, "release/*"], event: [push, tag, manual, cron, api, pull_request]}
matrix: {PY: ["3.11", "3.12"]}  # one job per combination
services:                        # sidecars reachable by name from steps
  - {name: db, image: postgres:16, env: {POSTGRES_PASSWORD: ci}}
prepare:                         # runs once in the fresh checkout, before the steps
  - git submodule update --init
steps:
  - name: test
    image: python:3.12           # per-step override
    commands: [pip install -e ., pytest -q]
    env: {X: "1"}
    secrets: [PYPI_TOKEN]        # project secrets exposed as env vars
    when: {branch: main}
    allow_failure: false
    timeout: 10m
labels: [linux, docker]
artifacts:
  paths: ["dist/**", "reports/*.xml"]
  archive: 7z                    # 7z | zip | tar.gz | none
  hash: sha256                   # crc32 | crc64 | sha1 | sha256 | blake2 | none
  expire_in: 30d
cleanup: {remove_workspace: true}
timeout: 1h
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(PipelineError) as caught:
        load_conveyor_yml(text)
    return [str(problem) for problem in caught.value.problems]


class TestCompileDesignExample:
    def test_every_job_field_comes_from_the_file(self, push_to: Push) -> None:
        compiled = load_conveyor_yml(DESIGN_EXAMPLE).compile(push_to("main"))
        assert compiled.skipped_reason is None
        assert [job.name for job in compiled.jobs] == ["PY=3.11", "PY=3.12"]
        job = compiled.jobs[0]
        assert job.matrix == {"PY": "3.11"}
        assert job.image == "debian:bookworm"
        assert job.env == {"APP_ENV": "ci", "PY": "3.11"}
        assert job.workspace_path == "/workspace"
        assert job.output_path == "/output"
        assert job.services == [
            ServicePlan(name="db", image="postgres:16", env={"POSTGRES_PASSWORD": "ci"})
        ]
        assert job.steps == [
            StepPlan(name="prepare", commands=["git submodule update --init"]),
            StepPlan(
                name="test",
                kind=StepKind.SCRIPT,
                image="python:3.12",
                commands=["pip install -e .", "pytest -q"],
                env={"X": "1"},
                secrets=["PYPI_TOKEN"],
                allow_failure=False,
                timeout=600.0,
                skip_reason=None,
            ),
        ]
        assert job.artifacts == ArtifactPlan(
            paths=["dist/**", "reports/*.xml"],
            archive=ArchiveFormat.SEVEN_Z,
            hash=HashAlgorithm.SHA256,
            expire_in=30 * 86_400.0,
        )
        assert job.cleanup == CleanupPlan(remove_workspace=True)
        assert job.timeout == 3600.0
        assert job.labels == ["linux", "docker"]
        assert job.container == ContainerOptions()
        assert job.source == ".conveyor.yml"

    def test_step_whose_when_does_not_match_stays_with_a_skip_reason(self, push_to: Push) -> None:
        compiled = load_conveyor_yml(DESIGN_EXAMPLE).compile(push_to("release/2.0"))
        test_step = compiled.jobs[0].steps[1]
        assert test_step.name == "test"
        assert test_step.skip_reason == "branch release/2.0 does not match main"
        assert compiled.jobs[0].steps[0].skip_reason is None

    def test_pipeline_when_not_matching_gives_no_jobs_and_the_reason(self, push_to: Push) -> None:
        compiled = load_conveyor_yml(DESIGN_EXAMPLE).compile(push_to("feature/x"))
        assert compiled.jobs == []
        assert compiled.skipped_reason == "branch feature/x does not match main, release/*"

    def test_tag_runs_have_no_branch_so_only_the_event_is_checked(self, push_to: Push) -> None:
        compiled = load_conveyor_yml(DESIGN_EXAMPLE).compile(push_to(None, event="tag", tag="v1.0"))
        assert len(compiled.jobs) == 2

    def test_event_not_listed_gives_no_jobs(self, push_to: Push) -> None:
        text = "when: {event: [push, tag]}\nsteps: [{commands: make}]\n"
        compiled = load_conveyor_yml(text).compile(push_to("main", event="cron"))
        assert compiled.jobs == []
        assert compiled.skipped_reason == "event cron is not one of push, tag"

    def test_custom_file_name_is_the_plan_source(self, push_to: Push) -> None:
        pipeline = load_conveyor_yml("steps: [{commands: make}]\n", "ci/pipeline.yml")
        assert pipeline.source == "ci/pipeline.yml"
        assert pipeline.compile(push_to()).jobs[0].source == "ci/pipeline.yml"


class TestMinimalPipeline:
    def test_one_job_named_build_with_defaults(self, push_to: Push) -> None:
        [job] = load_conveyor_yml("steps:\n  - commands: make\n").compile(push_to()).jobs
        assert job.name == "build"
        assert job.matrix == {}
        assert job.image is None
        assert job.steps == [StepPlan(name="step-1", commands=["make"])]
        assert job.artifacts is None
        assert job.cleanup == CleanupPlan(remove_workspace=True)
        assert job.timeout is None
        assert job.labels == []

    def test_missing_image_uses_the_callers_default_image(self, push_to: Push) -> None:
        pipeline = load_conveyor_yml("steps: [{commands: make}]\n")
        [job] = pipeline.compile(push_to(default_image="conveyor-test/busybox:latest")).jobs
        assert job.image == "conveyor-test/busybox:latest"
        assert job.steps[0].image is None

    def test_unnamed_steps_are_numbered_by_position(self, push_to: Push) -> None:
        text = "steps:\n  - commands: a\n  - {name: named, commands: b}\n  - commands: c\n"
        [job] = load_conveyor_yml(text).compile(push_to()).jobs
        assert [step.name for step in job.steps] == ["step-1", "named", "step-3"]

    def test_step_options_reach_the_plan(self, push_to: Push) -> None:
        text = (
            "steps:\n"
            "  - name: flaky\n"
            "    commands: [./flaky.sh]\n"
            "    allow_failure: true\n"
            "    timeout: 90\n"
            "    secrets: TOKEN\n"
            "    when: {event: manual}\n"
        )
        [job] = load_conveyor_yml(text).compile(push_to()).jobs
        assert job.steps == [
            StepPlan(
                name="flaky",
                commands=["./flaky.sh"],
                allow_failure=True,
                timeout=90.0,
                secrets=["TOKEN"],
                skip_reason="event push is not one of manual",
            )
        ]

    def test_service_commands_and_cleanup_off(self, push_to: Push) -> None:
        text = (
            "services: [{name: cache, image: redis:7, commands: [redis-server, --save, '']}]\n"
            "cleanup: {remove_workspace: false}\n"
            "steps: [{commands: make}]\n"
        )
        [job] = load_conveyor_yml(text).compile(push_to()).jobs
        assert job.services == [
            ServicePlan(name="cache", image="redis:7", commands=["redis-server", "--save", ""])
        ]
        assert job.cleanup.remove_workspace is False


class TestEnvValues:
    def test_numbers_and_booleans_become_strings_as_written(self, push_to: Push) -> None:
        text = (
            "env: {VERSION: 3.10, COUNT: 3, DEBUG: true, RATIO: 0.5, NAME: x}\n"
            "steps: [{commands: make, env: {RETRIES: 2, VERBOSE: false}}]\n"
        )
        [job] = load_conveyor_yml(text).compile(push_to()).jobs
        assert job.env == {
            "VERSION": "3.10",
            "COUNT": "3",
            "DEBUG": "true",
            "RATIO": "0.5",
            "NAME": "x",
        }
        assert job.steps[0].env == {"RETRIES": "2", "VERBOSE": "false"}

    def test_a_list_value_is_an_error_at_the_value(self) -> None:
        assert errors_of("env:\n  PATHS: [a, b]\nsteps: [{commands: make}]\n") == [
            ".conveyor.yml:2:10: env.PATHS: expected a string, number or boolean, found a list"
        ]

    def test_a_bad_variable_name_is_an_error_at_the_key(self) -> None:
        assert errors_of("env:\n  MY-VAR: x\nsteps: [{commands: make}]\n") == [
            ".conveyor.yml:2:3: env.MY-VAR: expected a variable name such as APP_ENV "
            '(letters, digits and _), found "MY-VAR"'
        ]


class TestMatrix:
    def test_one_job_per_combination_first_key_slowest(self, push_to: Push) -> None:
        text = "matrix:\n  PY: [3.10, 3.12]\n  OS: [alpine, debian]\nsteps: [{commands: tox}]\n"
        jobs = load_conveyor_yml(text).compile(push_to()).jobs
        assert [job.name for job in jobs] == [
            "PY=3.10, OS=alpine",
            "PY=3.10, OS=debian",
            "PY=3.12, OS=alpine",
            "PY=3.12, OS=debian",
        ]
        assert jobs[1].matrix == {"PY": "3.10", "OS": "debian"}
        assert jobs[1].env == {"PY": "3.10", "OS": "debian"}

    def test_matrix_value_overrides_pipeline_env_of_the_same_name(self, push_to: Push) -> None:
        text = "env: {PY: '3.9', A: b}\nmatrix: {PY: ['3.11']}\nsteps: [{commands: tox}]\n"
        [job] = load_conveyor_yml(text).compile(push_to()).jobs
        assert job.env == {"PY": "3.11", "A": "b"}

    def test_empty_value_list_is_an_error(self) -> None:
        assert errors_of("matrix:\n  PY: []\nsteps: [{commands: tox}]\n") == [
            ".conveyor.yml:2:7: matrix.PY: expected a non-empty list, found an empty list"
        ]

    def test_too_many_combinations_is_an_error(self) -> None:
        values = ", ".join(str(n) for n in range(17))
        text = f"matrix:\n  A: [{values}]\n  B: [{values}]\nsteps: [{{commands: x}}]\n"
        assert errors_of(text) == [
            f".conveyor.yml:2:3: matrix: the matrix makes 289 jobs, more than {MAX_MATRIX_JOBS}; "
            "use fewer values"
        ]


class TestErrorPlacement:
    def test_unknown_top_level_key_suggests_the_close_one(self) -> None:
        assert errors_of("image: alpine\nstpes:\n  - commands: make\n") == [
            ".conveyor.yml:1:1: steps: missing required key `steps`",
            ".conveyor.yml:2:1: stpes: unknown key `stpes`, did you mean `steps`?",
        ]

    def test_unknown_step_key_suggests_a_step_key(self) -> None:
        text = "steps:\n  - commands: make\n    alow_failure: true\n"
        assert errors_of(text) == [
            ".conveyor.yml:3:5: steps[0].alow_failure: unknown key `alow_failure`, "
            "did you mean `allow_failure`?"
        ]

    def test_unknown_key_with_nothing_close_has_no_suggestion(self) -> None:
        assert errors_of("steps: [{commands: make}]\nzzz: 1\n") == [
            ".conveyor.yml:2:1: zzz: unknown key `zzz`"
        ]

    def test_labels_belong_to_the_job_not_the_step(self) -> None:
        assert errors_of("steps:\n  - commands: make\n    labels: [gpu]\n") == [
            ".conveyor.yml:3:5: steps[0].labels: unknown key `labels`"
        ]

    def test_wrong_type_names_what_was_expected_and_found(self) -> None:
        text = "image: [debian]\nsteps:\n  - commands: make\n    allow_failure: sometimes\n"
        assert errors_of(text) == [
            ".conveyor.yml:1:8: image: expected an image name such as debian:bookworm, "
            "found a list",
            '.conveyor.yml:4:20: steps[0].allow_failure: expected true or false, found "sometimes"',
        ]

    def test_steps_must_be_a_list(self) -> None:
        assert errors_of("steps:\n  commands: make\n") == [
            ".conveyor.yml:2:3: steps: expected a list, found a mapping"
        ]

    def test_bad_duration_points_at_the_value(self) -> None:
        text = (
            "steps:\n"
            "  - commands: a\n"
            "  - commands: b\n"
            "  - name: slow\n"
            "    commands: c\n"
            "    timeout: ten minutes\n"
        )
        assert errors_of(text) == [
            ".conveyor.yml:6:14: steps[2].timeout: expected a duration such as 90s, 10m or 1h,"
            ' found "ten minutes"'
        ]

    def test_bad_top_level_timeout_and_expire_in(self) -> None:
        text = "timeout: 1y\nartifacts: {expire_in: -1}\nsteps: [{commands: a}]\n"
        assert errors_of(text) == [
            '.conveyor.yml:1:10: timeout: expected a duration such as 90s, 10m or 1h, found "1y"',
            ".conveyor.yml:2:24: artifacts.expire_in: expected a duration such as 90s, 10m or 1h,"
            " found -1",
        ]

    def test_bad_glob_list_points_at_each_bad_item(self) -> None:
        text = 'when:\n  branch: [main, 42, "release/[1"]\nsteps: [{commands: a}]\n'
        assert errors_of(text) == [
            ".conveyor.yml:2:18: when.branch[1]: expected a branch glob such as main or "
            "release/*, found 42",
            ".conveyor.yml:2:22: when.branch[2]: expected a branch glob such as main or "
            "release/* (`[` at position 9 of 'release/[1' is never closed; write `[[]` for a "
            'literal `[`), found "release/[1"',
        ]

    def test_branch_as_a_mapping_is_an_error(self) -> None:
        text = "steps:\n  - commands: a\n    when: {branch: {name: main}}\n"
        assert errors_of(text) == [
            ".conveyor.yml:3:20: steps[0].when.branch: expected a branch glob or a list of "
            "globs, found a mapping"
        ]

    def test_unknown_event_suggests_the_close_one(self) -> None:
        text = "when: {event: [push, pul_request]}\nsteps: [{commands: a}]\n"
        assert errors_of(text) == [
            ".conveyor.yml:1:22: when.event[1]: expected an event: one of push, tag, "
            'pull_request, manual, cron, api, found "pul_request"; did you mean `pull_request`?'
        ]

    def test_unknown_archive_and_hash(self) -> None:
        text = "artifacts:\n  archive: rar\n  hash: md5\nsteps: [{commands: a}]\n"
        assert errors_of(text) == [
            ".conveyor.yml:2:12: artifacts.archive: expected an archive format: one of 7z, zip, "
            'tar.gz, none, found "rar"',
            ".conveyor.yml:3:9: artifacts.hash: expected a hash algorithm: one of crc32, crc64, "
            'sha1, sha256, blake2, none, found "md5"',
        ]

    def test_yaml_syntax_error_has_its_line_and_column(self) -> None:
        assert errors_of("image: alpine\nsteps:\n  - commands: [make\n") == [
            ".conveyor.yml:4:1: invalid YAML: expected ',' or ']', but got '<stream end>' "
            "(while parsing a flow sequence at line 3, column 15)"
        ]

    def test_duplicate_key_is_an_error_at_the_second_one(self) -> None:
        text = "image: alpine\nsteps:\n  - commands: make\n    commands: test\n"
        assert errors_of(text) == [
            ".conveyor.yml:4:5: steps[0].commands: duplicate key `commands` "
            "(first given at line 3, column 5); keep only one"
        ]

    def test_duplicate_step_names_point_at_the_second_name(self) -> None:
        text = "steps:\n  - name: test\n    commands: a\n  - name: test\n    commands: b\n"
        assert errors_of(text) == [
            ".conveyor.yml:4:11: steps[1].name: duplicate step name `test` "
            "(also at line 2, column 11); give each step its own name"
        ]

    def test_step_named_like_a_generated_name_clashes(self) -> None:
        text = "steps:\n  - commands: a\n  - name: step-1\n    commands: b\n"
        assert errors_of(text) == [
            ".conveyor.yml:3:11: steps[1].name: duplicate step name `step-1` "
            "(also at line 2, column 5); give each step its own name"
        ]

    def test_step_named_prepare_clashes_with_the_prepare_commands(self) -> None:
        text = "prepare: [make deps]\nsteps:\n  - name: prepare\n    commands: b\n"
        assert errors_of(text) == [
            ".conveyor.yml:3:11: steps[0].name: duplicate step name `prepare` "
            "(also at line 1, column 10); give each step its own name"
        ]

    def test_duplicate_service_names_are_an_error(self) -> None:
        text = (
            "services:\n  - {name: db, image: postgres:16}\n  - {name: db, image: mysql:8}\n"
            "steps: [{commands: a}]\n"
        )
        assert errors_of(text) == [
            ".conveyor.yml:3:12: services[1].name: duplicate service name `db` (also at line 2, "
            "column 12); steps reach services by name, so names must differ"
        ]

    def test_missing_commands_points_at_the_step(self) -> None:
        assert errors_of("steps:\n  - name: a\n") == [
            ".conveyor.yml:2:5: steps[0].commands: missing required key `commands`"
        ]

    def test_every_problem_of_the_file_is_reported_at_once(self) -> None:
        text = (
            "imgae: alpine\n"
            "timeout: forever\n"
            "steps:\n"
            "  - name: a\n"
            "    commands: [1]\n"
            "  - name: a\n"
            "    commands: b\n"
            "timeout: 1h\n"
        )
        assert errors_of(text) == [
            ".conveyor.yml:1:1: imgae: unknown key `imgae`, did you mean `image`?",
            ".conveyor.yml:5:16: steps[0].commands[0]: expected a command (a string), found 1",
            ".conveyor.yml:6:11: steps[1].name: duplicate step name `a` "
            "(also at line 4, column 11); give each step its own name",
            ".conveyor.yml:8:1: timeout: duplicate key `timeout` "
            "(first given at line 2, column 1); keep only one",
        ]

    @pytest.mark.parametrize(
        ("text", "found"),
        [("", "an empty file"), ("- a\n- b\n", "a list"), ("just text\n", "a single value")],
    )
    def test_a_file_that_is_not_a_mapping_is_an_error(self, text: str, found: str) -> None:
        assert errors_of(text) == [
            ".conveyor.yml:1:1: expected a mapping of pipeline keys (image, env, steps, ...), "
            f"found {found}"
        ]

    def test_steps_cannot_be_empty(self) -> None:
        assert errors_of("steps: []\n") == [
            ".conveyor.yml:1:8: steps: expected a non-empty list, found an empty list"
        ]
