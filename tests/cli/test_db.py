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
