from __future__ import annotations

from collections.abc import Callable

import pytest

from conveyor.pipeline import PipelineError, TriggerContext
from conveyor.pipeline.amsbuild import load_ams_build
from conveyor.pipeline.plan import (
    ArchiveFormat,
    ArtifactPlan,
    CleanupPlan,
    ContainerOptions,
    HashAlgorithm,
    StepPlan,
)

Push = Callable[..., TriggerContext]

# Shaped like AMS-Build's example project (tabs, dashed keys, optional keys that mean
# nothing to Conveyor such as get-git-hash and ams-container-dest).
EXAMPLE_PROJECT = """\
{
\t"build-name-format": "{project}_{build_hash}_build_{build_index}",
\t"docker": {
\t\t"image": "conveyor-test/busybox:latest",
\t\t"args": "-it --rm --memory 2g --cpus 1.5 -e UNITY_VERSION=2019.4",
\t\t"project-dest": "/root/project",
\t\t"build-output-dest": "/root/project/Builds",
\t\t"ams-container-dest": "/root/AMS-Build",
\t\t"stop-timeout": 10
\t},
\t"prepare-build": {
\t\t"master-dir-commands": [
\t\t\t"cd testCIGame/",
\t\t\t"git pull origin master"
\t\t],
\t\t"get-git-hash": true,
\t\t"build-dir-commands": [
\t\t\t"git checkout --detach {git_hash}"
\t\t]
\t},
\t"environment": {
\t\t"BUILD_DIR": "{build_output_dest}/{build_name}",
\t\t"BUILD_INDEX": 24,
\t\t"RELEASE": false
\t},
\t"pipeline": [
\t\t{
\t\t\t"name": "build",
\t\t\t"commands": ["./build.sh {project-dest} {{literal}}"],
\t\t\t"exit-line": "exit code 0"
\t\t},
\t\t{
\t\t\t"name": "report",
\t\t\t"commands": ["echo built by {actor} at {created}"],
\t\t\t"exit-line": false
\t\t}
\t],
\t"cleanup": {
\t\t"remove_build_source": true,
\t\t"7z_build": true,
\t\t"7z_hash": "SHA1"
\t}
}
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(PipelineError) as caught:
        load_ams_build(text)
    return [str(problem) for problem in caught.value.problems]


class TestCompileExampleProject:
    def test_every_job_field_comes_from_the_file(self, push_to: Push) -> None:
        compiled = load_ams_build(EXAMPLE_PROJECT).compile(push_to("master"))
        assert compiled.skipped_reason is None
        [job] = compiled.jobs
        build_name = "exampleProject_c9bffcd6309225d86d2ff455f454d8ab9ec538cb_build_7"
        assert job.name == "build"
        assert job.image == "conveyor-test/busybox:latest"
        assert job.workspace_path == "/root/project"
        assert job.output_path == "/root/project/Builds"
        assert job.env == {
            "UNITY_VERSION": "2019.4",
            "BUILD_DIR": f"/root/project/Builds/{build_name}",
            "BUILD_INDEX": "24",
            "RELEASE": "false",
        }
        assert job.steps == [
            StepPlan(
                name="prepare",
                commands=[
                    "cd testCIGame/",
                    "git pull origin master",
                    "git checkout --detach 0123456789abcdef0123456789abcdef01234567",
                ],
            ),
            StepPlan(
                name="build",
                commands=["./build.sh /root/project {literal}"],
                exit_line="exit code 0",
            ),
            StepPlan(name="report", commands=["echo built by ada at 19/08/2020 @ 01:50:05"]),
        ]
        assert job.container == ContainerOptions(memory="2g", cpus=1.5, stop_timeout=10.0)
        assert job.cleanup == CleanupPlan(remove_workspace=True)
        assert job.artifacts == ArtifactPlan(
            archive=ArchiveFormat.SEVEN_Z, hash=HashAlgorithm.SHA1, name=build_name
        )
        assert job.services == []
        assert job.matrix == {}
        assert job.source == "pipeline.json"

    def test_build_hash_falls_back_to_the_commit(self, push_to: Push) -> None:
        text = '{"build-name-format": "b-{build_hash}", "pipeline": [{"commands": "x"}]}'
        [job] = load_ams_build(text).compile(push_to(build_hash="")).jobs
        assert job.artifacts is not None
        assert job.artifacts.name == "b-0123456789abcdef0123456789abcdef01234567"


class TestMinimalFile:
    def test_defaults_when_only_stages_are_given(self, push_to: Push) -> None:
        text = '{"pipeline": [{"commands": ["make"]}, {"commands": "make test"}]}'
        [job] = load_ams_build(text).compile(push_to(default_image="img:1")).jobs
        assert job.image == "img:1"
        assert job.workspace_path == "/workspace"
        assert job.output_path == "/output"
        assert job.steps == [
            StepPlan(name="step-1", commands=["make"]),
            StepPlan(name="step-2", commands=["make test"]),
        ]
        assert job.cleanup == CleanupPlan(remove_workspace=False)
        assert job.artifacts == ArtifactPlan(
            archive=ArchiveFormat.NONE,
            hash=HashAlgorithm.NONE,
            name="exampleProject_c9bffcd6309225d86d2ff455f454d8ab9ec538cb_build_7",
        )
        assert job.container == ContainerOptions()

    def test_files_kept_one_by_one_when_7z_build_is_false(self, push_to: Push) -> None:
        text = (
            '{"pipeline": [{"commands": "x"}],'
            ' "cleanup": {"7z_build": false, "7z_hash": null, "remove_build_source": false}}'
        )
        [job] = load_ams_build(text).compile(push_to()).jobs
        assert job.artifacts is not None
        assert job.artifacts.archive == ArchiveFormat.NONE
        assert job.artifacts.hash == HashAlgorithm.NONE
        assert job.cleanup.remove_workspace is False

    @pytest.mark.parametrize(
        ("written", "algorithm"),
        [
            ("CRC32", HashAlgorithm.CRC32),
            ("crc64", HashAlgorithm.CRC64),
            ("Sha256", HashAlgorithm.SHA256),
            ("BLAKE2", HashAlgorithm.BLAKE2),
            ("BLAKE2sp", HashAlgorithm.BLAKE2),
            ("blake2ep", HashAlgorithm.BLAKE2),
        ],
    )
    def test_7z_hash_names_are_case_insensitive(
        self, push_to: Push, written: str, algorithm: HashAlgorithm
    ) -> None:
        text = f'{{"pipeline": [{{"commands": "x"}}], "cleanup": {{"7z_hash": "{written}"}}}}'
        [job] = load_ams_build(text).compile(push_to()).jobs
        assert job.artifacts is not None
        assert job.artifacts.hash == algorithm

    def test_docker_args_as_a_list_and_stop_timeout_key_wins(self, push_to: Push) -> None:
        text = (
            '{"docker": {"args": ["--user", "1000:1000", "--stop-timeout=3", "--shm-size=1g"],'
            ' "stop-timeout": 20}, "pipeline": [{"commands": "x"}]}'
        )
        [job] = load_ams_build(text).compile(push_to()).jobs
        assert job.container == ContainerOptions(user="1000:1000", shm_size="1g", stop_timeout=20)

    def test_placeholders_in_the_destination_paths(self, push_to: Push) -> None:
        text = (
            '{"docker": {"project-dest": "/src/{project}",'
            ' "build-output-dest": "/out/{build_index}"},'
            ' "pipeline": [{"commands": "cp -r {project_dest} {build-output-dest}"}]}'
        )
        [job] = load_ams_build(text).compile(push_to()).jobs
        assert job.workspace_path == "/src/exampleProject"
        assert job.output_path == "/out/7"
        assert job.steps[0].commands == ["cp -r /src/exampleProject /out/7"]


class TestErrors:
    def test_refused_docker_flag_is_placed_at_the_args_value(self) -> None:
        text = (
            '{\n  "docker": {\n    "args": "--rm --privileged"\n  },\n'
            '  "pipeline": [{"commands": "x"}]\n}'
        )
        assert errors_of(text) == [
            "pipeline.json:3:13: docker.args: `--privileged` is refused: it gives the build root "
            "on the host"
        ]

    def test_refused_docker_flag_in_a_list_is_placed_at_its_item(self) -> None:
        text = '{"docker": {"args": ["--rm", "-v", "/:/host"]}, "pipeline": [{"commands": "x"}]}'
        assert errors_of(text) == [
            "pipeline.json:1:30: docker.args[1]: `-v` is refused: it mounts host paths into the "
            "build; the workspace and output are mounted for you"
        ]

    def test_unknown_placeholder_is_named_at_its_value(self) -> None:
        text = (
            '{\n  "pipeline": [\n'
            '    {"name": "build", "commands": ["make", "cp out {output_dir}"]}\n'
            "  ]\n}"
        )
        [problem] = errors_of(text)
        assert problem.startswith(
            "pipeline.json:3:44: pipeline[0].commands[1]: unknown placeholder `{output_dir}`; "
            "known are {actor}, {build-output-dest}, "
        )
        assert problem.endswith("(write {{ for a literal brace)")

    def test_unknown_placeholder_in_environment_and_prepare(self) -> None:
        text = (
            '{"prepare-build": {"master-dir-commands": ["cd {master_source_dir}"]},\n'
            ' "environment": {"A": "{nope}"},\n'
            ' "pipeline": [{"commands": "x"}]}'
        )
        problems = errors_of(text)
        assert [p.split(": unknown placeholder ")[0] for p in problems] == [
            "pipeline.json:1:44: prepare-build.master-dir-commands[0]",
            "pipeline.json:2:23: environment.A",
        ]
        assert "`{master_source_dir}`" in problems[0]
        assert "`{nope}`" in problems[1]

    def test_destination_path_cannot_use_directory_placeholders(self) -> None:
        text = '{"docker": {"project-dest": "/x/{project_dest}"}, "pipeline": [{"commands": "x"}]}'
        [problem] = errors_of(text)
        assert problem.startswith(
            "pipeline.json:1:29: docker.project-dest: unknown placeholder `{project_dest}`"
        )

    def test_unbalanced_brace_says_how_to_escape(self) -> None:
        assert errors_of('{"pipeline": [{"commands": "echo {"}]}') == [
            "pipeline.json:1:28: pipeline[0].commands: Single '{' encountered in format string in "
            "'echo {'; write {{ or }} for a literal brace"
        ]

    def test_unknown_section_suggests_the_close_one(self) -> None:
        assert errors_of('{"pipeline": [{"commands": "x"}], "enviroment": {}}') == [
            "pipeline.json:1:35: enviroment: unknown key `enviroment`, did you mean `environment`?"
        ]

    def test_relative_destination_path_is_an_error(self) -> None:
        assert errors_of(
            '{"docker": {"build-output-dest": "out"}, "pipeline": [{"commands": "x"}]}'
        ) == [
            "pipeline.json:1:34: docker.build-output-dest: expected an absolute container path "
            'such as /root/project (not /), found "out"'
        ]

    def test_duplicate_stage_names_are_an_error(self) -> None:
        text = '{"pipeline": [\n{"name": "a", "commands": "x"},\n{"name": "a", "commands": "y"}]}'
        assert errors_of(text) == [
            "pipeline.json:3:10: pipeline[1].name: duplicate stage name `a` "
            "(also at line 2, column 10); give each stage its own name"
        ]

    def test_schema_flag_and_placeholder_problems_are_reported_together(self) -> None:
        text = (
            '{"docker": {"args": "--network host"},\n'
            ' "pipeline": [{"commands": "{x}", "exit-line": true}]}'
        )
        assert errors_of(text) == [
            "pipeline.json:1:21: docker.args: `--network` is refused: Conveyor sets the job's "
            "network itself (services, isolation)",
            "pipeline.json:2:28: pipeline[0].commands: unknown placeholder `{x}`; known are "
            "{actor}, {build-output-dest}, {build_hash}, {build_index}, {build_name}, "
            "{build_output_dest}, {created}, {git_hash}, {project}, {project-dest}, "
            "{project_dest} (write {{ for a literal brace)",
            "pipeline.json:2:48: pipeline[0].exit-line: expected the last line the stage must "
            "print (a string), or false, found true",
        ]

    def test_missing_pipeline_section_is_an_error(self) -> None:
        assert errors_of('{"docker": {"image": "x"}}') == [
            "pipeline.json:1:1: pipeline: missing required key `pipeline`"
        ]

    def test_json_that_is_not_an_object_is_an_error(self) -> None:
        assert errors_of("[1, 2]") == [
            "pipeline.json:1:1: expected a JSON object with docker, prepare-build, pipeline, ..., "
            "found an array"
        ]
