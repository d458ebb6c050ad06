"""The `.conveyor.yml` format (DESIGN.md section 4): schema, loading and compiling."""

from __future__ import annotations

import itertools
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr

from conveyor.pipeline.compiled import PREPARE_STEP_NAME, CompiledPipeline, Pipeline
from conveyor.pipeline.conditions import When
from conveyor.pipeline.context import TriggerContext
from conveyor.pipeline.document import Document, FieldPath, load_yaml
from conveyor.pipeline.errors import PipelineError, Problem
from conveyor.pipeline.fieldtypes import (
    Commands,
    Duration,
    Flag,
    Image,
    Name,
    VariableName,
    Variables,
    VariableValue,
    choice,
    one_or_list,
    text,
)
from conveyor.pipeline.plan import (
    ArchiveFormat,
    ArtifactPlan,
    CleanupPlan,
    HashAlgorithm,
    JobPlan,
    ServicePlan,
    StepPlan,
)
from conveyor.pipeline.validation import validate_document

MAX_MATRIX_JOBS = 256
"""A matrix bigger than this is almost surely a mistake (and would flood the queue)."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServiceSpec(_Section):
    name: Name
    image: Image
    env: Variables = Field(default_factory=dict)
    # The service container's command line, word by word: an empty word is a real
    # argument here, unlike in a step's shell commands.
    commands: Annotated[
        list[StrictStr], BeforeValidator(one_or_list("a command or a list of arguments"))
    ] = Field(default_factory=list)


class StepSpec(_Section):
    name: Name | None = None
    image: Image | None = None
    commands: Commands
    env: Variables = Field(default_factory=dict)
    secrets: Annotated[
        list[VariableName], BeforeValidator(one_or_list("a secret name or a list of them"))
    ] = Field(default_factory=list)
    when: When | None = None
    allow_failure: Flag = False
    timeout: Duration | None = None


class ArtifactsSpec(_Section):
    paths: Annotated[
        list[Annotated[str, BeforeValidator(text("a path glob such as dist/**"))]],
        BeforeValidator(one_or_list("a path glob or a list of them")),
    ] = Field(default_factory=list)
    archive: Annotated[
        ArchiveFormat, BeforeValidator(choice(ArchiveFormat, "an archive format"))
    ] = ArchiveFormat.NONE
    hash: Annotated[HashAlgorithm, BeforeValidator(choice(HashAlgorithm, "a hash algorithm"))] = (
        HashAlgorithm.SHA256
    )
    expire_in: Duration | None = None


class CleanupSpec(_Section):
    remove_workspace: Flag = True


MatrixValues = Annotated[
    list[VariableValue], BeforeValidator(one_or_list("a list of values")), Field(min_length=1)
]


class ConveyorFile(_Section):
    """The whole `.conveyor.yml`; keys exactly as in DESIGN.md section 4."""

    image: Image | None = None
    env: Variables = Field(default_factory=dict)
    when: When | None = None
    matrix: dict[VariableName, MatrixValues] = Field(default_factory=dict)
    services: list[ServiceSpec] = Field(default_factory=list)
    prepare: Commands = Field(default_factory=list)
    steps: list[StepSpec] = Field(min_length=1)
    labels: Annotated[list[Name], BeforeValidator(one_or_list("a label or a list of labels"))] = (
        Field(default_factory=list)
    )
    artifacts: ArtifactsSpec | None = None
    cleanup: CleanupSpec = CleanupSpec()
    timeout: Duration | None = None


class ConveyorPipeline(Pipeline):
    """A validated `.conveyor.yml`."""

    def __init__(self, spec: ConveyorFile, source: str = ".conveyor.yml") -> None:
        self.spec = spec
        self.source = source

    def compile(self, ctx: TriggerContext) -> CompiledPipeline:
        spec = self.spec
        if spec.when is not None:
            reason = spec.when.mismatch(ctx)
            if reason is not None:
                return CompiledPipeline(jobs=[], skipped_reason=reason)
        return CompiledPipeline(
            jobs=[self._job(ctx, combination) for combination in matrix_combinations(spec)]
        )

    def _job(self, ctx: TriggerContext, combination: dict[str, str]) -> JobPlan:
        spec = self.spec
        steps: list[StepPlan] = []
        if spec.prepare:
            steps.append(StepPlan(name=PREPARE_STEP_NAME, commands=list(spec.prepare)))
        for number, step in enumerate(spec.steps, start=1):
            steps.append(
                StepPlan(
                    name=step.name or f"step-{number}",
                    image=step.image,
                    commands=list(step.commands),
                    env=dict(step.env),
                    secrets=list(step.secrets),
                    allow_failure=step.allow_failure,
                    timeout=step.timeout,
                    skip_reason=step.when.mismatch(ctx) if step.when is not None else None,
                )
            )
        artifacts = None
        if spec.artifacts is not None:
            artifacts = ArtifactPlan(
                paths=list(spec.artifacts.paths),
                archive=spec.artifacts.archive,
                hash=spec.artifacts.hash,
                expire_in=spec.artifacts.expire_in,
            )
        return JobPlan(
            name=matrix_job_name(combination) if combination else "build",
            matrix=combination,
            image=spec.image or ctx.default_image,
            env={**spec.env, **combination},
            services=[
                ServicePlan(
                    name=service.name,
                    image=service.image,
                    env=dict(service.env),
                    commands=list(service.commands),
                )
                for service in spec.services
            ],
            steps=steps,
            artifacts=artifacts,
            cleanup=CleanupPlan(remove_workspace=spec.cleanup.remove_workspace),
            timeout=spec.timeout,
            labels=list(spec.labels),
            source=self.source,
        )


def matrix_combinations(spec: ConveyorFile) -> list[dict[str, str]]:
    """Every combination of the matrix, first key varying slowest; `[{}]` without one."""
    names = list(spec.matrix)
    return [
        dict(zip(names, values, strict=True))
        for values in itertools.product(*(spec.matrix[name] for name in names))
    ]


def matrix_job_name(combination: dict[str, str]) -> str:
    """`{"PY": "3.11", "OS": "x"}` -> `PY=3.11, OS=x`."""
    return ", ".join(f"{name}={value}" for name, value in combination.items())


def load_conveyor_yml(text: str, file: str = ".conveyor.yml") -> ConveyorPipeline:
    """Parse and validate a `.conveyor.yml`; raises `PipelineError` listing every problem."""
    document = load_yaml(text, file)
    if not isinstance(document.data, dict):
        raise PipelineError(
            [
                *document.problems,
                document.problem(
                    (),
                    expected="a mapping of pipeline keys (image, env, steps, ...)",
                    found="an empty file"
                    if document.data is None
                    else ("a list" if isinstance(document.data, list) else "a single value"),
                ),
            ]
        )
    _keep_numbers_as_written(document)
    problems = _step_name_problems(document) + _service_name_problems(document)
    spec, validation_problems = validate_document(ConveyorFile, document)
    problems = validation_problems + problems
    if spec is not None:
        problems += _matrix_size_problems(spec, document)
    if spec is None or problems:
        raise PipelineError(problems)
    return ConveyorPipeline(spec, source=file)


def _keep_numbers_as_written(document: Document) -> None:
    """Env and matrix values are text: `3.10` stays "3.10", not YAML's float 3.1."""
    for path, written in document.number_text.items():
        keeps_text = path[:1] in (("env",), ("matrix",)) or (
            len(path) >= 4 and path[0] in ("steps", "services") and path[2] == "env"
        )
        if keeps_text:
            _replace(document.data, path, written)


def _replace(data: object, path: FieldPath, value: object) -> None:
    for part in path[:-1]:
        data = data[part]  # type: ignore[index]
    data[path[-1]] = value  # type: ignore[index]


def _raw_list(document: Document, key: str) -> list[object]:
    assert isinstance(document.data, dict)
    items = document.data.get(key)
    return items if isinstance(items, list) else []


def _step_name_problems(document: Document) -> list[Problem]:
    """Step names (given or generated) must be unique, and not clash with `prepare`."""
    assert isinstance(document.data, dict)
    seen: dict[str, FieldPath] = {}
    if document.data.get("prepare"):
        seen[PREPARE_STEP_NAME] = ("prepare",)
    problems = []
    for index, step in enumerate(_raw_list(document, "steps")):
        if not isinstance(step, dict):
            continue
        name = step.get("name")
        path: FieldPath = ("steps", index, "name") if name is not None else ("steps", index)
        if name is None:
            name = f"step-{index + 1}"
        if not isinstance(name, str):
            continue
        earlier = seen.get(name)
        if earlier is None:
            seen[name] = path
            continue
        where = document.position_of(earlier)
        problems.append(
            document.problem(
                path,
                f"duplicate step name `{name}` (also at line {where.line}, column "
                f"{where.column}); give each step its own name",
            )
        )
    return problems


def _service_name_problems(document: Document) -> list[Problem]:
    seen: dict[str, FieldPath] = {}
    problems = []
    for index, service in enumerate(_raw_list(document, "services")):
        if not isinstance(service, dict) or not isinstance(service.get("name"), str):
            continue
        name = service["name"]
        path: FieldPath = ("services", index, "name")
        if name in seen:
            where = document.position_of(seen[name])
            problems.append(
                document.problem(
                    path,
                    f"duplicate service name `{name}` (also at line {where.line}, column "
                    f"{where.column}); steps reach services by name, so names must differ",
                )
            )
        else:
            seen[name] = path
    return problems


def _matrix_size_problems(spec: ConveyorFile, document: Document) -> list[Problem]:
    size = 1
    for values in spec.matrix.values():
        size *= len(values)
    if size <= MAX_MATRIX_JOBS:
        return []
    return [
        document.problem(
            ("matrix",),
            f"the matrix makes {size} jobs, more than {MAX_MATRIX_JOBS}; use fewer values",
        )
    ]
