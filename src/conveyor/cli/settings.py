"""The server's settings as the commands read them: a value that is not valid ends the
command with what is wrong, where it came from and how to fix it, not a traceback."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from conveyor.server.config import Settings


def load_settings(
    overrides: Mapping[str, Any] | None = None, options: Mapping[str, str] | None = None
) -> Settings:
    """`Settings` from the environment, `.env` and `overrides` (command-line options'
    values by field name; `options` names the option of a field where it is not
    ``--field-name``). Exits with status 2 and one line per bad value when one is wrong."""
    # Imported here: every `conveyor` command imports this module; `conveyor exec` and
    # `conveyor agent` must not load the server.
    from pydantic import ValidationError

    from conveyor.server.config import Settings

    given = dict(overrides or {})
    try:
        return Settings(**given)
    except ValidationError as exc:
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            where = _source(field, given, options or {})
            typer.echo(f"error: {where}: {error['msg']}", err=True)
        typer.echo(
            "fix the option, or the variable in the environment or in .env, and start again",
            err=True,
        )
        raise typer.Exit(2) from None


def _source(field: str, given: Mapping[str, Any], options: Mapping[str, str]) -> str:
    """Where a setting's value came from, as the user would write it."""
    if field in given:
        option = options.get(field, "--" + field.replace("_", "-"))
        return f"{option} {given[field]}"
    if field.startswith(("CONVEYOR_", "CICD_")):
        return f"{field} (environment or .env)"  # a field read under an alias
    return f"CONVEYOR_{field.upper()} (environment or .env)"
