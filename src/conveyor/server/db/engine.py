"""Engines and sessions for the configured database."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session, sessionmaker

from conveyor.server.db import dialect


def create_database_engine(url: str | URL) -> Engine:
    """An engine for SQLite or PostgreSQL with the settings each needs (see `dialect`)."""
    parsed = dialect.normalize_url(url)
    dialect.prepare_location(parsed)
    engine = create_engine(parsed, **dialect.engine_options(parsed))
    dialect.install_connection_hooks(engine)
    return engine


def create_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded values after commit, so a response can still be built
    from the objects a request committed."""
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=True)
