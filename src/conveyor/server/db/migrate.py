"""Alembic, driven from code: no alembic.ini is needed at run time.

Alembic (with Mako) is imported only when a migration has to run, and the server runs
its migrations in a child process: once imported, Alembic stays in a process's memory
(about 10 MiB) for good. The check that a database is at the newest revision, made at
every start and every `/readyz`, reads the revision table and the scripts' revision
lines itself."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.engine import URL

from conveyor.server.db.engine import create_database_engine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version"
"""Where Alembic keeps the database's revision (its default name; env.py keeps it)."""


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration pointing at our migrations; with `connection`, env.py
    runs on it instead of opening its own."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade_database(url: str | URL, revision: str = "head") -> None:
    """Bring the database at `url` up to `revision` (default: the newest). Idempotent."""
    engine = create_database_engine(url)
    try:
        upgrade_engine(engine, revision)
    finally:
        engine.dispose()


def upgrade_engine(engine: Engine, revision: str = "head") -> None:
    if revision == "head" and current_revision_is_head(engine):
        return
    from alembic import command

    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), revision)


def upgrade_engine_in_subprocess(engine: Engine) -> None:
    """`upgrade_engine` to the newest revision for a long-running process (the server):
    when a migration is due, Alembic runs in a child process and never enters this one.
    An in-memory SQLite database exists only here, and is upgraded here."""
    if current_revision_is_head(engine):
        return
    if engine.url.get_backend_name() == "sqlite" and engine.url.database in (None, "", ":memory:"):
        upgrade_engine(engine)
        return
    # The URL (with its password) goes through stdin, not the command line or the
    # environment, where other users of the machine could read it.
    child = subprocess.run(
        [sys.executable, "-c", _UPGRADE_IN_CHILD],
        input=engine.url.render_as_string(hide_password=False),
        capture_output=True,
        text=True,
        check=False,
    )
    if child.returncode != 0:
        raise RuntimeError(
            f"migrating the database failed (exit status {child.returncode}):\n{child.stderr}"
        )


_UPGRADE_IN_CHILD = (
    "import sys; from conveyor.server.db.migrate import upgrade_database; "
    "upgrade_database(sys.stdin.read())"
)


def downgrade_engine(engine: Engine, revision: str) -> None:
    from alembic import command

    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), revision)


def head_revisions() -> set[str]:
    """The revisions no other migration revises, as Alembic finds them: from the
    `revision` and `down_revision` assignments of each script in versions/."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for script in (MIGRATIONS_DIR / "versions").glob("*.py"):
        if script.name == "__init__.py":
            continue  # Alembic skips it too
        constants = _module_constants(script)
        revision = constants.get("revision")
        if not isinstance(revision, str):
            raise RuntimeError(f"migration {script} has no `revision = '...'` line")
        revisions.add(revision)
        down = constants.get("down_revision")
        if isinstance(down, str):
            revised.add(down)
        elif isinstance(down, tuple | list):
            revised.update(str(parent) for parent in down)
    return revisions - revised


def _module_constants(script: Path) -> dict[str, object]:
    """The literal values assigned to plain names at the top level of `script`."""
    constants: dict[str, object] = {}
    for node in ast.parse(script.read_text(encoding="utf-8"), str(script)).body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name):
                try:
                    constants[target.id] = ast.literal_eval(value)
                except (ValueError, TypeError):
                    continue  # not a literal, such as a column type: not a revision
    return constants


def current_revisions(engine: Engine) -> set[str]:
    """The revisions the database is at (none before the first migration)."""
    with engine.connect() as connection:
        if not inspect(connection).has_table(VERSION_TABLE):
            return set()
        rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))  # noqa: S608
        return {row[0] for row in rows}


def current_revision_is_head(engine: Engine) -> bool:
    """True when the database has every migration this code knows, and no other."""
    return current_revisions(engine) == head_revisions()
