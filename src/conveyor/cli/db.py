"""`conveyor db`: the database schema."""

from __future__ import annotations

import typer

app = typer.Typer(help="Manage the server's database.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """Manage the server's database."""
    # A callback keeps this a command group even with one command, so that
    # `conveyor db upgrade` reads the same standalone and when mounted in the main app.


@app.command()
def upgrade() -> None:
    """Apply every pending migration to the database of the settings
    (CONVEYOR_DATABASE_URL, default a SQLite file in CONVEYOR_DATA_DIR)."""
    # Imported here: every `conveyor` command imports this module; `conveyor exec` and
    # `conveyor agent` must not load the server.
    from conveyor.cli.settings import load_settings
    from conveyor.server.db import dialect
    from conveyor.server.db.migrate import upgrade_database

    settings = load_settings()
    upgrade_database(settings.database_url)
    shown = dialect.normalize_url(settings.database_url).render_as_string(hide_password=True)
    typer.echo(f"database {shown} is at the newest migration")
