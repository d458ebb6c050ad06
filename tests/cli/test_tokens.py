"""`conveyor token create` against a fresh data directory and database."""

from __future__ import annotations

import hashlib

from sqlalchemy import select
from typer.testing import CliRunner

from conveyor.cli.tokens import ScopeChoice, app
from conveyor.cli.users import app as users_app
from conveyor.server.db.engine import create_database_engine, create_session_factory
from conveyor.server.models import ApiToken, TokenScope
from conveyor.server.users import service as users_service
from tests.fixtures.databases import settings_environment

__all__ = ["settings_environment"]


class TestCreate:
    def test_prints_a_token_stored_only_as_its_hash_with_the_asked_scope(
        self, settings_environment: dict[str, str]
    ) -> None:
        added = CliRunner().invoke(
            users_app,
            ["add", "ada", "--password", "correct horse battery"],
            env=settings_environment,
        )
        assert added.exit_code == 0, added.output
        result = CliRunner().invoke(
            app,
            [
                "create",
                "--user",
                "ada",
                "--name",
                "deploy",
                "--scope",
                "read",
                "--expires-days",
                "7",
            ],
            env=settings_environment,
        )
        assert result.exit_code == 0, result.output
        token = result.output.strip()
        assert token.startswith("cvy_")

        engine = create_database_engine(settings_environment["CONVEYOR_DATABASE_URL"])
        try:
            with create_session_factory(engine)() as session:
                row = session.scalars(select(ApiToken)).one()
                assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
                assert (row.name, row.scopes) == ("deploy", ["read"])
                assert row.expires_at is not None
                actor = users_service.actor_for_token(session, token)
                assert actor.name == "ada"
                assert actor.scopes == frozenset({TokenScope.READ})
        finally:
            engine.dispose()

    def test_unknown_user_fails_naming_it(self, settings_environment: dict[str, str]) -> None:
        result = CliRunner().invoke(app, ["create", "--user", "ghost"], env=settings_environment)
        assert result.exit_code == 1
        assert "no user named 'ghost'" in result.output


class TestScopeChoice:
    def test_offers_exactly_the_token_scopes(self) -> None:
        assert [choice.value for choice in ScopeChoice] == [scope.value for scope in TokenScope]
