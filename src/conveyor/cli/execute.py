"""`conveyor exec`: run a repository's pipeline here, with the engine the server uses.

Only the command's options live here: every `conveyor` command imports this module,
and the engine, the backends and rich load when `exec` itself runs (local_run.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DEFAULT_CACHE = Path.home() / ".cache" / "conveyor"


def exec_command(
    directory: Annotated[
        Path, typer.Argument(help="A directory inside the git checkout to run.")
    ] = Path("."),
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend", "-b", help="docker or local (default: docker when an engine answers)."
        ),
    ] = None,
    repo: Annotated[
        str | None,
        typer.Option("--repo", help="Run a remote repository instead of this checkout."),
    ] = None,
    ref: Annotated[
        str | None,
        typer.Option("--ref", help="Branch, tag or commit of --repo (default: its HEAD)."),
    ] = None,
    secret: Annotated[
        list[str] | None,
        typer.Option("--secret", "-s", help="NAME=VALUE; also read from CONVEYOR_SECRET_NAME."),
    ] = None,
    variable: Annotated[
        list[str] | None, typer.Option("--var", "-v", help="NAME=VALUE given to every step.")
    ] = None,
    event: Annotated[str, typer.Option(help="The event `when` filters see.")] = "push",
    pipeline_path: Annotated[
        str, typer.Option("--pipeline", help="Path of the pipeline file in the repository.")
    ] = ".conveyor.yml",
    build_command: Annotated[
        str | None,
        typer.Option(help="Command to run when the repository has no pipeline file."),
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(help="Image for pipelines that name none (zero-config, AMS-Build)."),
    ] = None,
    job: Annotated[
        list[str] | None, typer.Option("--job", "-j", help="Run only the jobs with these names.")
    ] = None,
    network: Annotated[
        str,
        typer.Option(help="none, job, bridge, or auto (bridge when the engine has one, else job)."),
    ] = "auto",
    artifacts_dir: Annotated[Path, typer.Option(help="Where artifacts are written.")] = Path(
        ".conveyor/artifacts"
    ),
    keep_workspace: Annotated[
        bool, typer.Option(help="Keep the workspace after the run (its path is printed).")
    ] = False,
    grace: Annotated[
        float | None, typer.Option(help="Seconds between SIGTERM and SIGKILL on cancel.")
    ] = None,
    cache_dir: Annotated[
        Path, typer.Option(help="Mirror cache for --repo.", envvar="CONVEYOR_CACHE_DIR")
    ] = DEFAULT_CACHE,
) -> None:
    """Run the pipeline of a checkout (or of --repo at --ref) here, as the server would."""
    from conveyor.cli.local_run import run_command

    run_command(
        directory=directory,
        backend=backend,
        repo=repo,
        ref=ref,
        secret=secret,
        variable=variable,
        event=event,
        pipeline_path=pipeline_path,
        build_command=build_command,
        image=image,
        job=job,
        network=network,
        artifacts_dir=artifacts_dir,
        keep_workspace=keep_workspace,
        grace=grace,
        cache_dir=cache_dir,
    )
