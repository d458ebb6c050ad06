"""Everything that differs between SQLite and PostgreSQL, and nothing else.

No other module compares dialect names: they ask this one.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Engine, event, make_url
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import URL
from sqlalchemy.types import TypeEngine

from conveyor.server.errors import InvalidInputError

SQLITE_BUSY_TIMEOUT_MS = 10_000


class DatabaseKind(StrEnum):
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


def json_type() -> TypeEngine[Any]:
    """JSON on SQLite, JSONB on PostgreSQL (indexable, compared by value)."""
    return JSON().with_variant(JSONB(), "postgresql")


def normalize_url(url: str | URL) -> URL:
    """Parse a database URL and pick the driver we ship: psycopg 3 for PostgreSQL.

    `postgresql://` and `postgres://` (what most hosting shows) mean psycopg 3 here,
    since psycopg2 is not a dependency.
    """
    parsed = make_url(url) if isinstance(url, str) else url
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        return parsed
    raise InvalidInputError(
        f"database URL {parsed.render_as_string(hide_password=True)!r} names "
        f"{backend!r}; Conveyor runs on SQLite (sqlite:///path/to/file.db) or "
        "PostgreSQL (postgresql+psycopg://user:password@host/db)",
        code="unsupported_database",
    )


def kind_of(url: str | URL) -> DatabaseKind:
    return DatabaseKind(normalize_url(url).get_backend_name())


def engine_options(url: URL) -> dict[str, Any]:
    """Keyword arguments for `create_engine` that suit this database."""
    if kind_of(url) is DatabaseKind.SQLITE:
        # The server reads and writes from several threads; each connection is used
        # by one thread at a time, which is all SQLite's check is about.
        return {"connect_args": {"check_same_thread": False}}
    return {"pool_pre_ping": True}


def prepare_location(url: URL) -> None:
    """Create the directory of a SQLite file, so a fresh data directory just works."""
    if kind_of(url) is DatabaseKind.SQLITE and url.database not in (None, "", ":memory:"):
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def install_connection_hooks(engine: Engine) -> None:
    """Per-connection settings: on SQLite WAL, foreign keys, a busy timeout, and real
    transactions (the sqlite3 module otherwise delays BEGIN until the first write,
    which makes read-then-write sequences race)."""
    if engine.dialect.name != DatabaseKind.SQLITE:
        return

    @event.listens_for(engine, "connect")
    def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
        # Autocommit at the driver level; SQLAlchemy's "begin" hook below opens the
        # transactions itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_sqlite(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN")
