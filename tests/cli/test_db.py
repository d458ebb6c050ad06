"""`conveyor db upgrade` against a fresh data directory and database."""

from __future__ import annotations

from typer.testing import CliRunner

from conveyor.cli.db import app
from conveyor.server.db.engine import create_database_engine
from conveyor.server.db.migrate import current_revision_is_head
from tests.fixtures.databases import settings_environment

__all__ = ["settings_environment"]


class TestUpgrade:
    def test_brings_an_empty_database_to_head_and_is_repeatable(
        self, settings_environment: dict[str, str]
    ) -> None:
        engine = create_database_engine(settings_environment["CONVEYOR_DATABASE_URL"])
        try:
            assert not current_revision_is_head(engine)
            for _attempt in range(2):
                result = CliRunner().invoke(app, ["upgrade"], env=settings_environment)
                assert result.exit_code == 0, result.output
                assert "newest migration" in result.output
                assert current_revision_is_head(engine)
        finally:
            engine.dispose()

    def test_password_is_not_printed(self, settings_environment: dict[str, str]) -> None:
        result = CliRunner().invoke(app, ["upgrade"], env=settings_environment)
        assert result.exit_code == 0, result.output
        assert ":conveyor@" not in result.output

    def test_a_bad_setting_is_named_without_a_traceback(
        self, settings_environment: dict[str, str]
    ) -> None:
        env = {**settings_environment, "CONVEYOR_MAX_PROJECTS_PER_USER": "many"}
        result = CliRunner().invoke(app, ["upgrade"], env=env)
        assert result.exit_code == 2
        assert "error: CONVEYOR_MAX_PROJECTS_PER_USER (environment or .env)" in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
