"""`conveyor user`: local accounts, acting on the database directly (the server may
not be running)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

# The server's modules are imported in the commands that use them: every `conveyor`
# command imports this module, and `conveyor exec` and `conveyor agent` must not load
# the server (its database layer and models).

app = typer.Typer(help="Manage local user accounts.", no_args_is_help=True)


@contextmanager
def database_session() -> Iterator[Session]:
    """One unit of work on the configured database, brought up to date first (as the
    server does at start). A ConveyorError ends the command with its message."""
    from conveyor.cli.settings import load_settings
    from conveyor.server.db.engine import create_database_engine, create_session_factory
    from conveyor.server.db.migrate import upgrade_engine
    from conveyor.server.errors import ConveyorError

    engine = create_database_engine(load_settings().database_url)
    try:
        upgrade_engine(engine)
        with create_session_factory(engine).begin() as session:
            yield session
    except ConveyorError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(code=1) from exc
    finally:
        engine.dispose()


def _password_or_generated(password: str | None) -> tuple[str, bool]:
    """The password to use and whether it was generated (and must be shown)."""
    from conveyor.server.users import passwords

    if password is not None:
        return password, False
    return passwords.generate_password(), True


@app.command("add")
def add_user(
    name: str,
    admin: Annotated[bool, typer.Option("--admin", help="Make the user an administrator.")] = False,
    password: Annotated[
        str | None,
        typer.Option(help="The password; without it one is generated and printed once."),
    ] = None,
) -> None:
    """Create a local user."""
    from conveyor.server.users import service as users_service

    chosen, generated = _password_or_generated(password)
    with database_session() as session:
        users_service.create_user(session, name, chosen, is_admin=admin)
    role = "administrator" if admin else "user"
    typer.echo(f"created {role} {name!r}")
    if generated:
        typer.echo(f"password: {chosen}  (shown only now)")


@app.command("passwd")
def change_password(
    name: str,
    password: Annotated[
        str | None,
        typer.Option(
            prompt=True,
            confirmation_prompt=True,
            hide_input=True,
            help="The new password (asked for when not given).",
        ),
    ] = None,
) -> None:
    """Set a user's password (ends their browser sessions)."""
    from conveyor.server.users import service as users_service

    assert password is not None  # prompted for by typer
    with database_session() as session:
        user = users_service.get_user_by_name(session, name)
        users_service.set_password(user, password)
    typer.echo(f"password of {name!r} changed")


@app.command("list")
def list_users() -> None:
    """List the users: name, admin flag, active flag."""
    from conveyor.server.users import service as users_service

    with database_session() as session:
        rows = [
            (user.name, user.is_admin, user.is_active) for user in users_service.list_users(session)
        ]
    for name, is_admin, is_active in rows:
        flags = ", ".join(
            flag for flag, on in (("admin", is_admin), ("inactive", not is_active)) if on
        )
        typer.echo(f"{name}\t{flags}" if flags else name)


@app.command("set-admin")
def set_admin(
    name: str,
    admin: Annotated[
        bool, typer.Option("--admin/--no-admin", help="Grant (default) or revoke admin.")
    ] = True,
) -> None:
    """Grant or revoke a user's administrator flag."""
    from conveyor.server.users import service as users_service

    with database_session() as session:
        user = users_service.get_user_by_name(session, name)
        users_service.set_admin(user, admin)
    typer.echo(f"{name!r} is {'now' if admin else 'no longer'} an administrator")
