from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from conveyor.server.db.base import Base
from conveyor.server.db.engine import create_database_engine
from conveyor.server.db.migrate import (
    alembic_config,
    current_revision_is_head,
    downgrade_engine,
    head_revisions,
    upgrade_database,
    upgrade_engine,
)

DOMAIN_TABLES = {
    "users",
    "api_tokens",
    "projects",
    "memberships",
    "secrets",
    "runs",
    "jobs",
    "steps",
    "artifacts",
    "agents",
    "audit_events",
}


class TestUpgradeDatabase:
    def test_empty_database_gets_every_table_and_is_at_head(self, fresh_database_url: str) -> None:
        engine = create_database_engine(fresh_database_url)
        try:
            assert not current_revision_is_head(engine)
            upgrade_database(fresh_database_url)
            assert set(inspect(engine).get_table_names()) >= DOMAIN_TABLES
            assert current_revision_is_head(engine)
        finally:
            engine.dispose()

    def test_upgrading_twice_changes_nothing(self, migrated_engine: Engine) -> None:
        upgrade_engine(migrated_engine)
        assert current_revision_is_head(migrated_engine)

    def test_migrations_build_exactly_what_the_models_describe(
        self, migrated_engine: Engine
    ) -> None:
        with migrated_engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
        assert differences == []

    def test_queue_index_covers_status_priority_descending_queue_time_and_id(
        self, migrated_engine: Engine
    ) -> None:
        indexes = {index["name"]: index for index in inspect(migrated_engine).get_indexes("jobs")}
        queue = indexes["ix_jobs_queue"]
        assert queue["column_names"] == ["status", "priority", "queued_at", "id"]
        # SQLite's reflection leaves the order out; the claim's query plan is checked in
        # tests/server/agents/test_repository.py on both databases.
        assert queue.get("column_sorting", {"priority": ("desc",)}) == {"priority": ("desc",)}

    def test_back_off_index_is_partial(self, migrated_engine: Engine) -> None:
        # The model leaves the predicate out (Alembic does not compare predicates), so
        # the migration alone carries it.
        indexes = {index["name"]: index for index in inspect(migrated_engine).get_indexes("jobs")}
        options = indexes["ix_jobs_claimable"].get("dialect_options", {})
        predicate = options.get(f"{migrated_engine.dialect.name}_where")
        assert predicate is not None
        assert "claimable_at IS NOT NULL" in str(predicate)

    def test_downgrade_to_base_removes_the_schema_and_upgrade_restores_it(
        self, fresh_database_url: str
    ) -> None:
        engine = create_database_engine(fresh_database_url)
        try:
            upgrade_engine(engine)
            downgrade_engine(engine, "base")
            assert not DOMAIN_TABLES & set(inspect(engine).get_table_names())
            assert not current_revision_is_head(engine)
            upgrade_engine(engine)
            assert current_revision_is_head(engine)
        finally:
            engine.dispose()


class TestSqliteLocation:
    def test_missing_data_directory_is_created_for_the_database_file(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'not' / 'yet' / 'conveyor.db'}"
        upgrade_database(url)
        assert (tmp_path / "not" / "yet" / "conveyor.db").is_file()


class TestHeadRevisions:
    def test_are_the_heads_alembic_finds(self) -> None:
        assert head_revisions() == set(ScriptDirectory.from_config(alembic_config()).get_heads())


class TestUpgradeEngineInSubprocess:
    def test_upgrades_a_fresh_database_without_importing_alembic_here(
        self, fresh_database_url: str
    ) -> None:
        # A process of its own, since this one imported Alembic long ago: the server's
        # start must leave Alembic out of the server.
        code = (
            "import sys\n"
            "from conveyor.server.db.engine import create_database_engine\n"
            "from conveyor.server.db.migrate import current_revision_is_head, "
            "upgrade_engine_in_subprocess\n"
            "engine = create_database_engine(sys.stdin.read())\n"
            "upgrade_engine_in_subprocess(engine)\n"
            "assert current_revision_is_head(engine)\n"
            "upgrade_engine_in_subprocess(engine)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako')))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code],
            input=fresh_database_url,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "[]"
