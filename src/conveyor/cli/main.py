"""The `conveyor` command."""

from __future__ import annotations

import typer

from conveyor import __version__
from conveyor.cli import agent, db, execute, server, tokens, users

app = typer.Typer(
    name="conveyor",
    help="Conveyor: a self-hosted CI/CD server.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("server")(server.server_command)
app.command("agent")(agent.agent_command)
app.command("exec")(execute.exec_command)
app.add_typer(db.app, name="db")
app.add_typer(users.app, name="user")
app.add_typer(tokens.app, name="token")


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)
