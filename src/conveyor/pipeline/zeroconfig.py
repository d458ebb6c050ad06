"""Pipelines for repositories without a pipeline file (the FastAPI cicd service's rules).

In order: a `ci_build.sh` at the root is run; else the project's build command; else a
`Dockerfile` is built into an image; else there is no pipeline.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from conveyor.pipeline.compiled import CompiledPipeline, Pipeline
from conveyor.pipeline.context import TriggerContext
from conveyor.pipeline.errors import PipelineNotFoundError, Problem
from conveyor.pipeline.plan import JobPlan, StepKind, StepPlan

BUILD_SCRIPT = "ci_build.sh"
DOCKERFILE = "Dockerfile"
BUILD_COMMAND_SOURCE = "build_command"


class ZeroConfigPipeline(Pipeline):
    """One job with one step, chosen by what the repository holds."""

    def __init__(self, source: str, step: StepPlan | None) -> None:
        self.source = source
        self._step = step

    def compile(self, ctx: TriggerContext) -> CompiledPipeline:
        step = self._step
        if step is None:
            step = StepPlan(
                name="image",
                kind=StepKind.IMAGE_BUILD,
                dockerfile=DOCKERFILE,
                image_tag=f"conveyor/{project_slug(ctx.project)}:{ctx.commit_sha[:12]}",
            )
        job = JobPlan(name="build", image=ctx.default_image, steps=[step], source=self.source)
        return CompiledPipeline(jobs=[job])


def project_slug(project: str) -> str:
    """A project name as a Docker repository name: lowercase, `[a-z0-9]` joined by `.`/`_`/`-`."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", project.lower())
    slug = re.sub(r"[._-]{2,}", "-", slug).strip("._-")
    return slug or "project"


def zero_config_pipeline(
    read_file: Callable[[str], str | None],
    build_command: str | None,
    looked_for: list[str],
) -> ZeroConfigPipeline:
    """The zero-config pipeline for the repository; `PipelineNotFoundError` when none fits.

    `looked_for` names the pipeline files already tried, for the not-found message.
    """
    if read_file(BUILD_SCRIPT) is not None:
        return ZeroConfigPipeline(
            BUILD_SCRIPT, StepPlan(name="build", commands=[f"sh ./{BUILD_SCRIPT}"])
        )
    if build_command is not None and build_command.strip():
        return ZeroConfigPipeline(
            BUILD_COMMAND_SOURCE, StepPlan(name="build", commands=[build_command])
        )
    if read_file(DOCKERFILE) is not None:
        return ZeroConfigPipeline(DOCKERFILE, None)
    wanted = [*(f"a {name}" for name in looked_for), f"a {BUILD_SCRIPT}", "a build command"]
    raise PipelineNotFoundError(
        [
            Problem(
                file="",
                line=None,
                column=None,
                path="",
                message="no pipeline found: looked for "
                + ", ".join(wanted)
                + f" or a {DOCKERFILE}; add one of them to the repository root "
                "(or set the project's build command)",
            )
        ]
    )
