"""Persistence: the ORM base, engines for SQLite and PostgreSQL, sessions, migrations."""
