"""The pipeline: read a repository's pipeline definition and compile it into job plans.

Pure: no file system, no processes. Text arrives through a `read_file` callable.

    pipeline = load_pipeline(read_file)            # PipelineError on a bad file
    compiled = pipeline.compile(TriggerContext(event="push", branch="main", ...))
    compiled.jobs                                  # list[JobPlan], one per matrix cell
"""

from typing import TYPE_CHECKING, Any

from conveyor.pipeline.compiled import CompiledPipeline, Pipeline
from conveyor.pipeline.context import TriggerContext
from conveyor.pipeline.durations import parse_duration
from conveyor.pipeline.errors import PipelineError, PipelineNotFoundError, Problem
from conveyor.pipeline.globs import branch_matches

if TYPE_CHECKING:
    from conveyor.pipeline.loading import load_pipeline

__all__ = [
    "CompiledPipeline",
    "Pipeline",
    "PipelineError",
    "PipelineNotFoundError",
    "Problem",
    "TriggerContext",
    "branch_matches",
    "load_pipeline",
    "parse_duration",
]


def __getattr__(name: str) -> Any:
    # The readers (YAML and both file formats) load at their first use, so that a
    # server holds them only once it has read a pipeline file.
    if name == "load_pipeline":
        from conveyor.pipeline.loading import load_pipeline

        return load_pipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
