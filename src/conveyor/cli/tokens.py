"""`conveyor token`: API tokens, made on the database directly."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Annotated

import typer

from conveyor.cli.users import database_session


class ScopeChoice(StrEnum):
    """The values of `TokenScope`, spelled out here: the option's choices are built when
    any `conveyor` command starts, and `conveyor exec` must not import the server's
    models for them (a test checks that the two agree)."""

    READ = "read"
    WRITE = "write"


app = typer.Typer(help="Manage API tokens.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """Manage API tokens."""
    # A callback keeps this a command group even with one command, so that
    # `conveyor token create` reads the same standalone and when mounted in the main app.


@app.command("create")
def create_token(
    user: Annotated[str, typer.Option("--user", "-u", help="Whose token it is.")],
    name: Annotated[str, typer.Option("--name", "-n", help="What the token is for.")] = "cli",
    scope: Annotated[
        list[ScopeChoice] | None,
        typer.Option("--scope", "-s", help="read and/or write (default: both)."),
    ] = None,
    expires_days: Annotated[
        int | None, typer.Option("--expires-days", min=1, help="Days until it expires.")
    ] = None,
) -> None:
    """Create an API token and print it (it is shown only this once)."""
    from conveyor.server.models.api_token import TokenScope
    from conveyor.server.users import service as users_service

    with database_session() as session:
        owner = users_service.get_user_by_name(session, user)
        created = users_service.create_api_token(
            session,
            owner,
            name,
            scopes=[TokenScope(choice) for choice in scope] if scope else list(TokenScope),
            expires_in=timedelta(days=expires_days) if expires_days else None,
        )
        plaintext = created.plaintext
    typer.echo(plaintext)
