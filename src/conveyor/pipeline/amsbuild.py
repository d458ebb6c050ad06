"""AMS-Build `pipeline.json`, read so that its projects run unchanged.

Sections: `docker` (image, run flags, where the source and the output are mounted),
`prepare-build` (master-dir then build-dir commands, here one `prepare` step),
`environment`, `pipeline` (stages, each a step, with its `exit-line`) and `cleanup`
(remove the source, 7z the output, the 7z hash). `{placeholders}` in commands,
environment values and paths are filled as AMS-Build did, with `str.format` rules.
Keys AMS-Build documents but that mean nothing here (`build-name-format` aside) are
accepted and ignored: `get-git-hash`, `ams-container-dest`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from conveyor.pipeline.compiled import PREPARE_STEP_NAME, CompiledPipeline, Pipeline
from conveyor.pipeline.context import TriggerContext
from conveyor.pipeline.docker_args import DockerRunSettings, parse_docker_args
from conveyor.pipeline.document import Document, FieldPath, load_json
from conveyor.pipeline.errors import PipelineError, Problem
from conveyor.pipeline.fieldtypes import (
    Commands,
    Flag,
    Image,
    Name,
    Variables,
    text,
)
from conveyor.pipeline.placeholders import check_placeholders, fill_placeholders
from conveyor.pipeline.plan import (
    ArchiveFormat,
    ArtifactPlan,
    CleanupPlan,
    HashAlgorithm,
    JobPlan,
    StepPlan,
)
from conveyor.pipeline.validation import expected, validate_document

AMS_BUILD_FILE = "pipeline.json"
DEFAULT_BUILD_NAME_FORMAT = "{project}_{build_hash}_build_{build_index}"
# AMS-Build showed times as "19/08/2020 @ 01:50:05"; `{created}` keeps that shape.
CREATED_FORMAT = "%d/%m/%Y @ %H:%M:%S"

BUILD_PLACEHOLDERS = ("project", "build_hash", "build_index", "actor", "created", "git_hash")
DIRECTORY_PLACEHOLDERS = ("project_dest", "build_output_dest", "project-dest", "build-output-dest")
ALL_PLACEHOLDERS = (*BUILD_PLACEHOLDERS, "build_name", *DIRECTORY_PLACEHOLDERS)

_HASH_NAMES = {
    "crc32": HashAlgorithm.CRC32,
    "crc64": HashAlgorithm.CRC64,
    "sha1": HashAlgorithm.SHA1,
    "sha256": HashAlgorithm.SHA256,
    "blake2": HashAlgorithm.BLAKE2,
    "blake2sp": HashAlgorithm.BLAKE2,
    # AMS-Build's own documents spell it so.
    "blake2ep": HashAlgorithm.BLAKE2,
}


def _docker_args(value: Any) -> str | list[str]:
    if isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(item, str) for item in value)
    ):
        return value
    raise expected('docker run flags: a string such as "--memory 2g" or a list of strings')


def _container_path(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/") or value.strip("/") == "":
        raise expected("an absolute container path such as /root/project (not /)")
    return value


def _seconds(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    raise expected("a number of seconds such as 10")


def _exit_line(value: Any) -> str | None:
    # AMS-Build: `false` (or no key) means "judge the stage by its exit status only".
    if value is None or value is False:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise expected("the last line the stage must print (a string), or false")


def _hash(value: Any) -> HashAlgorithm:
    if value is None:
        return HashAlgorithm.NONE
    if isinstance(value, str) and value.strip().lower() in _HASH_NAMES:
        return _HASH_NAMES[value.strip().lower()]
    raise expected("null or one of CRC32, CRC64, SHA1, SHA256, BLAKE2 (BLAKE2sp)")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


ContainerPath = Annotated[str, BeforeValidator(_container_path)]


class DockerSection(_Section):
    image: Image | None = None
    args: Annotated[str | list[str], BeforeValidator(_docker_args)] = ""
    project_dest: ContainerPath | None = Field(default=None, alias="project-dest")
    build_output_dest: ContainerPath | None = Field(default=None, alias="build-output-dest")
    stop_timeout: Annotated[float, BeforeValidator(_seconds)] | None = Field(
        default=None, alias="stop-timeout"
    )
    ams_container_dest: str | None = Field(default=None, alias="ams-container-dest")


class PrepareBuildSection(_Section):
    master_dir_commands: Commands = Field(default_factory=list, alias="master-dir-commands")
    build_dir_commands: Commands = Field(default_factory=list, alias="build-dir-commands")
    get_git_hash: Flag = Field(default=False, alias="get-git-hash")


class StageSection(_Section):
    name: Name | None = None
    commands: Commands
    exit_line: Annotated[str | None, BeforeValidator(_exit_line)] = Field(
        default=None, alias="exit-line"
    )


class CleanupSection(_Section):
    remove_build_source: Flag = False
    seven_zip_build: Flag = Field(default=False, alias="7z_build")
    seven_zip_hash: Annotated[HashAlgorithm, BeforeValidator(_hash)] = Field(
        default=HashAlgorithm.NONE, alias="7z_hash"
    )


class AmsBuildFile(_Section):
    build_name_format: Annotated[
        str, BeforeValidator(text("a build name format such as {project}_build_{build_index}"))
    ] = Field(default=DEFAULT_BUILD_NAME_FORMAT, alias="build-name-format")
    docker: DockerSection = DockerSection()
    prepare_build: PrepareBuildSection = Field(
        default_factory=PrepareBuildSection, alias="prepare-build"
    )
    environment: Variables = Field(default_factory=dict)
    pipeline: list[StageSection] = Field(min_length=1)
    cleanup: CleanupSection = CleanupSection()


class AmsBuildPipeline(Pipeline):
    """A validated AMS-Build `pipeline.json`."""

    def __init__(
        self, spec: AmsBuildFile, docker_run: DockerRunSettings, source: str = AMS_BUILD_FILE
    ) -> None:
        self.spec = spec
        self.docker_run = docker_run
        self.source = source

    def placeholder_values(self, ctx: TriggerContext) -> dict[str, str]:
        """What every `{placeholder}` stands for in a run for `ctx`."""
        values = {
            "project": ctx.project,
            "build_hash": ctx.build_hash or ctx.commit_sha,
            "build_index": str(ctx.run_number),
            "actor": ctx.actor,
            "created": ctx.created.strftime(CREATED_FORMAT),
            "git_hash": ctx.commit_sha,
        }
        values["build_name"] = fill_placeholders(self.spec.build_name_format, values)
        docker = self.spec.docker
        project_dest = fill_placeholders(docker.project_dest or "/workspace", values)
        output_dest = fill_placeholders(docker.build_output_dest or "/output", values)
        values |= {
            "project_dest": project_dest,
            "project-dest": project_dest,
            "build_output_dest": output_dest,
            "build-output-dest": output_dest,
        }
        return values

    def compile(self, ctx: TriggerContext) -> CompiledPipeline:
        spec = self.spec
        values = self.placeholder_values(ctx)

        def fill(commands: list[str]) -> list[str]:
            return [fill_placeholders(command, values) for command in commands]

        steps: list[StepPlan] = []
        prepare = spec.prepare_build.master_dir_commands + spec.prepare_build.build_dir_commands
        if prepare:
            steps.append(StepPlan(name=PREPARE_STEP_NAME, commands=fill(prepare)))
        for number, stage in enumerate(spec.pipeline, start=1):
            steps.append(
                StepPlan(
                    name=stage.name or f"step-{number}",
                    commands=fill(stage.commands),
                    exit_line=stage.exit_line,
                )
            )
        container = self.docker_run.container
        if spec.docker.stop_timeout is not None:
            container = container.model_copy(update={"stop_timeout": spec.docker.stop_timeout})
        job = JobPlan(
            name="build",
            image=spec.docker.image or ctx.default_image,
            env={
                **self.docker_run.env,
                **{
                    name: fill_placeholders(value, values)
                    for name, value in spec.environment.items()
                },
            },
            workspace_path=values["project_dest"],
            output_path=values["build_output_dest"],
            steps=steps,
            artifacts=ArtifactPlan(
                archive=ArchiveFormat.SEVEN_Z
                if spec.cleanup.seven_zip_build
                else ArchiveFormat.NONE,
                hash=spec.cleanup.seven_zip_hash,
                name=values["build_name"],
            ),
            cleanup=CleanupPlan(remove_workspace=spec.cleanup.remove_build_source),
            container=container,
            source=self.source,
        )
        return CompiledPipeline(jobs=[job])


def load_ams_build(text: str, file: str = AMS_BUILD_FILE) -> AmsBuildPipeline:
    """Parse and validate a `pipeline.json`; raises `PipelineError` listing every problem."""
    document = load_json(text, file)
    if not isinstance(document.data, dict):
        raise PipelineError(
            [
                document.problem(
                    (),
                    expected="a JSON object with docker, prepare-build, pipeline, ...",
                    found="an array" if isinstance(document.data, list) else "a single value",
                )
            ]
        )
    spec, problems = validate_document(AmsBuildFile, document)
    # The checks below read the raw data, so a file with schema errors still gets
    # its flag and placeholder problems reported in the same go.
    problems += _stage_name_problems(document)
    docker_run, docker_problems = _docker_run(document)
    problems += docker_problems
    problems += _placeholder_problems(document)
    if spec is None or problems:
        raise PipelineError(problems)
    return AmsBuildPipeline(spec, docker_run, source=file)


def _docker_run(document: Document) -> tuple[DockerRunSettings, list[Problem]]:
    args = _raw(document.data, "docker", "args")
    if not isinstance(args, str | list) or not all(isinstance(item, str) for item in args):
        return DockerRunSettings(), []  # the schema reports the wrong type
    docker_run = parse_docker_args(args)
    problems = []
    for docker_problem in docker_run.problems:
        path: FieldPath = ("docker", "args")
        if isinstance(args, list):
            path = (*path, docker_problem.token_index)
        problems.append(document.problem(path, docker_problem.message))
    return docker_run, problems


def _raw(data: object, *path: str) -> object:
    """The raw value at `path`, or None where the data does not have that shape."""
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _texts(value: object, path: FieldPath) -> list[tuple[FieldPath, str]]:
    """The strings of a one-or-list value, each with its path."""
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, list):
        return [((*path, index), item) for index, item in enumerate(value) if isinstance(item, str)]
    return []


def _placeholder_problems(document: Document) -> list[Problem]:
    data = document.data
    build_names = (*BUILD_PLACEHOLDERS, "build_name")
    checks: list[tuple[FieldPath, str, tuple[str, ...]]] = [
        (path, value, BUILD_PLACEHOLDERS)
        for path, value in _texts(_raw(data, "build-name-format"), ("build-name-format",))
    ]
    for key in ("project-dest", "build-output-dest"):
        # The paths are what the directory placeholders stand for, so they can use
        # the build's names only.
        checks += [
            (path, value, build_names)
            for path, value in _texts(_raw(data, "docker", key), ("docker", key))
        ]
    for key in ("master-dir-commands", "build-dir-commands"):
        checks += [
            (path, value, ALL_PLACEHOLDERS)
            for path, value in _texts(_raw(data, "prepare-build", key), ("prepare-build", key))
        ]
    environment = _raw(data, "environment")
    if isinstance(environment, dict):
        checks += [
            (("environment", name), value, ALL_PLACEHOLDERS)
            for name, value in environment.items()
            if isinstance(value, str)
        ]
    stages = _raw(data, "pipeline")
    for index, stage in enumerate(stages if isinstance(stages, list) else []):
        checks += [
            (path, value, ALL_PLACEHOLDERS)
            for path, value in _texts(_raw(stage, "commands"), ("pipeline", index, "commands"))
        ]
    return [
        document.problem(path, message)
        for path, value, known in checks
        for message in check_placeholders(value, known)
    ]


def _stage_name_problems(document: Document) -> list[Problem]:
    """Stage names (given or generated) must be unique, and not clash with `prepare`."""
    assert isinstance(document.data, dict)
    seen: dict[str, FieldPath] = {}
    prepare = document.data.get("prepare-build")
    if isinstance(prepare, dict) and (
        prepare.get("master-dir-commands") or prepare.get("build-dir-commands")
    ):
        seen[PREPARE_STEP_NAME] = ("prepare-build",)
    stages = document.data.get("pipeline")
    problems = []
    for index, stage in enumerate(stages if isinstance(stages, list) else []):
        if not isinstance(stage, dict):
            continue
        name = stage.get("name", f"step-{index + 1}")
        if not isinstance(name, str):
            continue
        path: FieldPath = ("pipeline", index, "name") if "name" in stage else ("pipeline", index)
        if name not in seen:
            seen[name] = path
            continue
        where = document.position_of(seen[name])
        problems.append(
            document.problem(
                path,
                f"duplicate stage name `{name}` (also at line {where.line}, column "
                f"{where.column}); give each stage its own name",
            )
        )
    return problems
