"""Everything that differs between SQLite and PostgreSQL, and nothing else.

No other module compares dialect names: they ask this one.
"""

from __future__ import annotations

import threading
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Dialect,
    Engine,
    Select,
    event,
    exists,
    func,
    literal,
    make_url,
)
from sqlalchemy.engine import URL
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.expression import type_coerce
from sqlalchemy.sql.visitors import InternalTraversal
from sqlalchemy.types import TypeDecorator, TypeEngine

from conveyor.server.errors import InvalidInputError

SQLITE_BUSY_TIMEOUT_MS = 10_000
_SQLITE_BEGIN_OPTION = "conveyor_sqlite_begin"
_SQLITE_WRITER_TURN = "conveyor_sqlite_writer_turn"
_SQLITE_READ_ONLY = "conveyor_sqlite_read_only"


class DatabaseKind(StrEnum):
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


class JsonDocument(TypeDecorator[Any]):
    """JSON on SQLite, JSONB on PostgreSQL (indexable, compared by value).

    A decorator rather than `JSON().with_variant(JSONB(), ...)`, whose JSONB would have
    to exist when the models are defined: SQLAlchemy's PostgreSQL dialect is about 2 MiB
    of a server's memory, which a server on SQLite then never loads."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == DatabaseKind.POSTGRESQL:
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())


def json_type() -> TypeEngine[Any]:
    return JsonDocument()


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
    which makes read-then-write sequences race).

    Writers of this process take turns on a lock before `BEGIN IMMEDIATE`. SQLite makes
    a writer that finds the database locked sleep and retry, with sleeps that grow to
    100 ms, however soon the lock is free again; a lock hands the turn over at once.
    The busy timeout still covers other processes (and a turn not had within it)."""
    if engine.dialect.name != DatabaseKind.SQLITE:
        return
    writers = threading.Lock()

    def take_turn(connection: Any) -> None:
        if not connection.info.get(_SQLITE_WRITER_TURN) and writers.acquire(
            timeout=SQLITE_BUSY_TIMEOUT_MS / 1000
        ):
            connection.info[_SQLITE_WRITER_TURN] = True

    def end_turn(connection: Any) -> None:
        if connection.info.pop(_SQLITE_WRITER_TURN, False):
            writers.release()

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
        options = connection.get_execution_options()
        read_only = bool(options.get(_SQLITE_READ_ONLY))
        if connection.info.get(_SQLITE_READ_ONLY, False) is not read_only:
            connection.exec_driver_sql(f"PRAGMA query_only={int(read_only)}")
            connection.info[_SQLITE_READ_ONLY] = read_only
        mode = options.get(_SQLITE_BEGIN_OPTION, "")
        if mode == "IMMEDIATE":
            take_turn(connection)
        try:
            connection.exec_driver_sql(f"BEGIN {mode}".strip())
        except BaseException:
            end_turn(connection)
            raise

    # Both come just before the transaction ends; the next writer may then find the
    # lock still held for as long as a COMMIT takes, and waits that out in SQLite.
    event.listen(engine, "commit", end_turn)
    event.listen(engine, "rollback", end_turn)

    # A connection that leaves without either (invalidated, or returned to the pool
    # mid-transaction) gives its turn up too; its record holds the same `info`.
    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        end_turn(record)

    @event.listens_for(engine, "invalidate")
    def _invalidated(_dbapi_connection: Any, record: Any, _exception: Any) -> None:
        end_turn(record)


def write_transaction_options(engine: Engine) -> dict[str, Any]:
    """Execution options for a session's connection (`session.connection(
    execution_options=...)`, before its first statement) that make its transaction a
    writer from the start: `BEGIN IMMEDIATE` on SQLite, so that read-then-write
    sequences such as a job claim run one at a time instead of failing on upgrade.
    PostgreSQL needs nothing here: it locks rows (`lock_for_claim`)."""
    if engine.dialect.name == DatabaseKind.SQLITE:
        return {_SQLITE_BEGIN_OPTION: "IMMEDIATE"}
    return {}


def read_transaction_options(engine: Engine) -> dict[str, Any]:
    """Execution options for sessions that must only read (GET requests, log streams).
    On SQLite their transactions are `query_only`: a write fails at once, every time,
    with "attempt to write a readonly database". Without it such a write would work
    while the database is quiet and fail with "database is locked" when another writer
    is busy (a read transaction cannot wait to become a writer), a failure tests meet
    only by chance. A read that may write takes a writer session instead."""
    if engine.dialect.name == DatabaseKind.SQLITE:
        return {_SQLITE_READ_ONLY: True}
    return {}


def lock_for_claim(statement: Select[Any], *, skip_locked: bool) -> Select[Any]:
    """Lock the selected rows until the transaction ends: `FOR UPDATE [SKIP LOCKED]`
    on PostgreSQL (a row another claimer holds is passed over when `skip_locked`). On
    SQLite the clause is not rendered; the `BEGIN IMMEDIATE` of
    `write_transaction_options` already makes the whole transaction exclusive.

    The lock is `NO KEY UPDATE`, so rows that merely reference the locked one (steps
    of a job, runs of a project) can still be written meanwhile."""
    return statement.with_for_update(skip_locked=skip_locked, key_share=True)


JsonColumn = ColumnElement[Any] | QueryableAttribute[Any]


class _JsonArrayWithin(ColumnElement[bool]):
    """`json_array_within`: both spellings are built up front, the compiler picks one."""

    inherit_cache = True
    # Both spellings make the cache key, so that statements holding this one are cached.
    # (SQLAlchemy declares this list an instance attribute, hence no ClassVar.)
    _traverse_internals: list[tuple[str, InternalTraversal]] = [  # noqa: RUF012
        ("sqlite", InternalTraversal.dp_clauseelement),
        ("postgresql", InternalTraversal.dp_clauseelement),
    ]
    type = Boolean()

    def __init__(self, column: JsonColumn, values: list[str]) -> None:
        elements = func.json_each(column).table_valued("value")
        self.sqlite: ColumnElement[bool] = ~exists().where(elements.c.value.not_in(values))
        # `<@` spelled out: JSONB's own `contained_by` needs the PostgreSQL dialect loaded.
        self.postgresql: ColumnElement[bool] = type_coerce(column, JsonDocument()).op(
            "<@", is_comparison=True
        )(literal(values, JsonDocument()))


@compiles(_JsonArrayWithin, "sqlite")
def _compile_within_sqlite(element: _JsonArrayWithin, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.sqlite, **kw)


@compiles(_JsonArrayWithin, "postgresql")
def _compile_within_postgresql(element: _JsonArrayWithin, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.postgresql, **kw)


def json_array_within(column: JsonColumn, values: list[str]) -> ColumnElement[bool]:
    """True where the JSON array in `column` holds only strings among `values` (an empty
    array always): `json_each` on SQLite, JSONB containment (`<@`) on PostgreSQL."""
    return _JsonArrayWithin(column, sorted(set(values)))
