"""`conveyor agent`: run jobs of a Conveyor server on this machine."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from conveyor.agent import EXIT_WITH_PARENT_ENV, cache_dir_of

if TYPE_CHECKING:
    from conveyor.agent.loop import Agent

DEFAULT_HOME = Path.home() / ".cache" / "conveyor" / "agent"


def agent_command(
    server: Annotated[str, typer.Option(help="The server's URL, e.g. https://ci.example.com.")],
    token: Annotated[
        str,
        typer.Option(
            help="The agent's token (POST /api/v1/agents).", envvar="CONVEYOR_AGENT_TOKEN"
        ),
    ],
    labels: Annotated[str, typer.Option(help="Comma-separated labels, e.g. linux,gpu.")] = "",
    capacity: Annotated[int, typer.Option(min=1, help="Jobs run at once.")] = 1,
    backend: Annotated[
        str | None, typer.Option(help="docker or local (default: docker when an engine answers).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Agent name (default: the host name).")] = None,
    work_dir: Annotated[
        Path, typer.Option(help="Workspaces and the git mirror cache live here.")
    ] = DEFAULT_HOME,
) -> None:
    """Register with the server and run the jobs it gives, until interrupted."""
    # Imported here: every `conveyor` command imports this module, and only this one
    # needs the agent (backends, httpx).
    from conveyor.agent.backends.base import BackendError
    from conveyor.agent.backends.registry import create_backend, default_backend_name
    from conveyor.agent.loop import Agent, AgentSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # httpx logs every request at INFO: claims, heartbeats and log batches, many a second.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    parent = os.environ.get(EXIT_WITH_PARENT_ENV, "")
    if parent.isdigit():
        _exit_with_parent(int(parent))
    try:
        chosen = create_backend(backend or default_backend_name())
    except BackendError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    settings = AgentSettings(
        server_url=server,
        token=token,
        name=name or socket.gethostname(),
        work_dir=work_dir / "work",
        cache_dir=cache_dir_of(work_dir),
        labels=[label.strip() for label in labels.split(",") if label.strip()],
        capacity=capacity,
    )
    asyncio.run(_run(Agent(settings, chosen)))


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _exit_with_parent(parent: int) -> None:
    """Ask the kernel for SIGTERM when `parent` (the server, for its embedded agent)
    dies, so that a killed server leaves no agent behind. A server that died before
    this point is seen too: the agent's parent is then no longer `parent`."""
    if sys.platform.startswith("linux"):
        # Imported here: every `conveyor` command imports this module, the server too,
        # and only an embedded agent calls this.
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            logging.getLogger("conveyor.agent").warning(
                "cannot ask to stop with the server (prctl errno %d)", ctypes.get_errno()
            )
    if os.getppid() != parent:
        raise SystemExit(0)  # the server is gone already


async def _run(agent: Agent) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, agent.stop)
    await agent.run()
