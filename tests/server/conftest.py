"""Database and server fixtures of the server tests (see tests/fixtures)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from conveyor.server.app import create_app
from conveyor.server.config import Settings
from conveyor.server.models.user import User
from conveyor.server.users import passwords
from conveyor.server.users import service as users_service
from tests.fixtures.databases import (
    as_writer,
    database_url,
    db_session,
    fresh_database_url,
    migrated_engine,
)
from tests.fixtures.servers import serve

__all__ = ["database_url", "db_session", "fresh_database_url", "migrated_engine"]


@pytest.fixture(scope="module")
def server_settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data_dir: Path = tmp_path_factory.mktemp("data")
    # No embedded agent: tests that want jobs run start agents of their own.
    return Settings(data_dir=data_dir, database_url=database_url, agents=0)


@pytest.fixture(scope="module")
def server_app(server_settings: Settings, migrated_engine: Engine) -> FastAPI:
    return create_app(server_settings)


@pytest.fixture(scope="module")
def server_url(server_app: FastAPI) -> Iterator[str]:
    """One running server per module and database; tests share it, not its rows."""
    with serve(server_app) as url:
        yield url


@pytest.fixture
def http(server_url: str, db_session: object) -> Iterator[httpx.Client]:
    """A client of the running server; the database is emptied after the test."""
    with httpx.Client(base_url=server_url, timeout=10) as client:
        yield client


PASSWORD = "correct horse battery"


@functools.cache
def password_hash() -> str:
    """The argon2 hash of PASSWORD, made once: hashing is slow on purpose, and tests
    that are not about hashing need not pay for it again."""
    return passwords.hash_password(PASSWORD)


def add_user(session: Session, name: str, *, is_admin: bool = False) -> User:
    """A committed local user whose password is PASSWORD (what the session held before
    is committed first: the user is written by a writer from the start, see
    `as_writer`)."""
    hashed = password_hash()
    as_writer(session)
    user = users_service.create_user(session, name, None, is_admin=is_admin)
    user.password_hash = hashed
    session.commit()
    return user


def sign_in(client: httpx.Client, name: str, password: str = PASSWORD) -> httpx.Response:
    response = client.post("/api/v1/session", json={"name": name, "password": password})
    assert response.status_code == 200, response.text
    return response
