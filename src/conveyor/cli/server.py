"""`conveyor server`: the API, the queue and the background duties in one process, and
the embedded agent in a child process it supervises."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


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
    # Imported here, not at the top: every `conveyor` command imports this module, and
    # none but this one needs the server (about 60 MiB and a second of start).
    from conveyor.server.app import create_app
    from conveyor.server.config import Settings
    from conveyor.server.serving import serve

    overrides: dict[str, Any] = {"host": host, "port": port}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if agents is not None:
        overrides["agents"] = agents
    if backend is not None:
        overrides["embedded_backend"] = backend
    settings = Settings(**overrides)
    serve(create_app(settings), settings)
