"""The public shapes of a loaded pipeline and of what it compiles to."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from conveyor.pipeline.context import TriggerContext
from conveyor.pipeline.plan import JobPlan

PREPARE_STEP_NAME = "prepare"
"""The step that runs a pipeline's `prepare` commands, always first."""


@dataclass(frozen=True)
class CompiledPipeline:
    jobs: list[JobPlan]
    """One per matrix combination; empty when the pipeline's own `when` did not match."""
    skipped_reason: str | None = None
    """Why there are no jobs, e.g. "branch feature/x does not match main, release/*"."""


class Pipeline(ABC):
    """A validated pipeline, independent of any run.

    `compile` turns it into job plans for one trigger. Loading has already reported
    every problem of the file, so compiling does not fail on the file's content.
    """

    source: str
    """The file or zero-config rule it came from: ".conveyor.yml", "pipeline.json", ..."""

    @abstractmethod
    def compile(self, ctx: TriggerContext) -> CompiledPipeline:
        """The jobs to run for `ctx`, or none with the reason the pipeline does not run."""
