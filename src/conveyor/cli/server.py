"""`conveyor server`: the API, the queue and the background duties in one process, and
the embedded agent in a child process it supervises."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

import conveyor


def server_command(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Data directory (database, logs, artifacts); CONVEYOR_DATA_DIR."),
    ] = None,
    agents: Annotated[
        int | None, typer.Option(help="Slots of the embedded agent; 0 for none (default 1).")
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            help="Backend of the embedded agent (default: docker if it answers, else local)."
        ),
    ] = None,
) -> None:
    """Start the server; the first start prints a one-time admin password."""
    from conveyor.cli.settings import load_settings

    overrides: dict[str, Any] = {"host": host, "port": port}
    if data_dir is not None:
        overrides["data_dir"] = str(data_dir)
    if agents is not None:
        overrides["agents"] = agents
    if backend is not None:
        overrides["embedded_backend"] = backend
    load_settings(overrides, {"embedded_backend": "--backend"})  # bad values end here
    # The server runs in a fresh interpreter in this same process (pid, output and
    # signals stay), without Typer: it is the command line's, not the server's (with
    # what this process loaded for it, about 1 MiB of a server that idles under 80).
    # -P: the current directory is not put first on the module path (a `fastapi/` there
    # would shadow the real one), unless Conveyor itself is imported from there.
    here = Path(conveyor.__file__).resolve().parent.parent == Path.cwd().resolve()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(  # noqa: S606  # the interpreter itself: no shell, no user input in argv[0]
        sys.executable,
        [sys.executable, *([] if here else ["-P"]), "-m", "conveyor.server", json.dumps(overrides)],
    )
