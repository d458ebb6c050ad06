"""`conveyor user ...` against a fresh data directory and database (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from conveyor.cli.users import app
from conveyor.server.db.engine import create_database_engine, create_session_factory
from conveyor.server.errors import NotAuthenticatedError
from conveyor.server.users import service as users_service
from tests.fixtures.databases import settings_environment

__all__ = ["settings_environment"]

PASSWORD = "correct horse battery"


def run(args: list[str], env: dict[str, str], input: str | None = None) -> str:
    result = CliRunner().invoke(app, args, env=env, input=input)
    assert result.exit_code == 0, result.output
    return result.output


def check_password(env: dict[str, str], name: str, password: str) -> bool:
    engine = create_database_engine(env["CONVEYOR_DATABASE_URL"])
    try:
        with create_session_factory(engine)() as session:
            try:
                users_service.authenticate_password(session, name, password)
            except NotAuthenticatedError:
                return False
            return True
    finally:
        engine.dispose()


class TestAdd:
    def test_creates_a_user_on_a_database_never_migrated(
        self, settings_environment: dict[str, str]
    ) -> None:
        output = run(["add", "ada", "--password", PASSWORD], settings_environment)
        assert "created user 'ada'" in output
        assert check_password(settings_environment, "ada", PASSWORD)

    def test_without_password_prints_a_generated_one_that_works(
        self, settings_environment: dict[str, str]
    ) -> None:
        output = run(["add", "bob", "--admin"], settings_environment)
        password = output.split("password: ")[1].split()[0]
        assert check_password(settings_environment, "bob", password)
        assert "bob\tadmin" in run(["list"], settings_environment)

    def test_existing_name_fails_with_the_reason(
        self, settings_environment: dict[str, str]
    ) -> None:
        run(["add", "ada", "--password", PASSWORD], settings_environment)
        result = CliRunner().invoke(
            app, ["add", "ada", "--password", PASSWORD], env=settings_environment
        )
        assert result.exit_code == 1
        assert "already exists" in result.output


class TestPasswd:
    def test_prompts_twice_and_sets_the_new_password(
        self, settings_environment: dict[str, str]
    ) -> None:
        run(["add", "ada", "--password", PASSWORD], settings_environment)
        run(["passwd", "ada"], settings_environment, input="a new password\na new password\n")
        assert check_password(settings_environment, "ada", "a new password")
        assert not check_password(settings_environment, "ada", PASSWORD)

    def test_unknown_user_fails_naming_it(self, settings_environment: dict[str, str]) -> None:
        result = CliRunner().invoke(
            app, ["passwd", "ghost", "--password", PASSWORD], env=settings_environment
        )
        assert result.exit_code == 1
        assert "no user named 'ghost'" in result.output


class TestListAndSetAdmin:
    def test_set_admin_grants_and_revokes_as_list_shows(
        self, settings_environment: dict[str, str]
    ) -> None:
        run(["add", "ada", "--password", PASSWORD], settings_environment)
        assert run(["list"], settings_environment).splitlines() == ["ada"]
        run(["set-admin", "ada"], settings_environment)
        assert run(["list"], settings_environment).splitlines() == ["ada\tadmin"]
        run(["set-admin", "ada", "--no-admin"], settings_environment)
        assert run(["list"], settings_environment).splitlines() == ["ada"]


@pytest.mark.parametrize("command", [["list"], ["set-admin", "x"], ["add"]])
def test_help_exists_for_every_command(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command[:1], "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output
