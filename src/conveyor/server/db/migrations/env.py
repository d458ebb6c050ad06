"""Alembic's entry point, configured from code (see `conveyor.server.db.migrate`).

Given a connection in `config.attributes["connection"]`, migrations run on it; else the
URL comes from `sqlalchemy.url` or the server's settings (for `alembic revision` in
development).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

import conveyor.server.models  # noqa: F401  (registers every table on the metadata)
from conveyor.server.db.base import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online() -> None:
    given = context.config.attributes.get("connection")
    if given is not None:
        _run(given)
        return
    from conveyor.server.config import Settings
    from conveyor.server.db.engine import create_database_engine

    url = context.config.get_main_option("sqlalchemy.url") or Settings().database_url
    engine = create_database_engine(url)
    try:
        with engine.begin() as connection:
            _run(connection)
    finally:
        engine.dispose()


_run_online()
