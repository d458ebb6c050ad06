"""Find a repository's pipeline: its pipeline file, AMS-Build's, or a zero-config rule."""

from __future__ import annotations

from collections.abc import Callable

from conveyor.pipeline.amsbuild import AMS_BUILD_FILE, load_ams_build
from conveyor.pipeline.compiled import Pipeline
from conveyor.pipeline.conveyor_yml import load_conveyor_yml
from conveyor.pipeline.zeroconfig import zero_config_pipeline


def load_pipeline(
    read_file: Callable[[str], str | None],
    *,
    pipeline_path: str = ".conveyor.yml",
    build_command: str | None = None,
) -> Pipeline:
    """The repository's pipeline, read through `read_file`.

    `read_file(relative_path)` returns a file's text, or None when there is no such file.
    Looks for `pipeline_path`, then AMS-Build's `pipeline.json`, then the zero-config
    rules (`ci_build.sh`, `build_command`, `Dockerfile`). Raises `PipelineError` (each
    problem at file:line:column) when a file is there but wrong, and
    `PipelineNotFoundError` when nothing applies.
    """
    text = read_file(pipeline_path)
    if text is not None:
        return load_conveyor_yml(text, pipeline_path)
    text = read_file(AMS_BUILD_FILE)
    if text is not None:
        return load_ams_build(text, AMS_BUILD_FILE)
    return zero_config_pipeline(read_file, build_command, [pipeline_path, AMS_BUILD_FILE])
