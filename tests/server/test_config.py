from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from conveyor.server.config import Settings


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No CONVEYOR_/CICD_ variables from the caller, and no .env in the working dir."""
    for name in list(os.environ):
        if name.startswith(("CONVEYOR_", "CICD_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


class TestDefaults:
    def test_every_path_lives_in_the_data_dir(self, clean_environment: Path) -> None:
        settings = Settings(data_dir=clean_environment / "data")
        data = (clean_environment / "data").resolve()
        assert settings.repos_path == data / "repos"
        assert settings.artifacts_path == data / "artifacts"
        assert settings.database_url == f"sqlite:///{data / 'conveyor.db'}"

    def test_server_listens_on_localhost_8000_with_one_agent(self, clean_environment: Path) -> None:
        settings = Settings()
        assert (settings.host, settings.port, settings.agents) == ("127.0.0.1", 8000, 1)
        assert settings.data_dir == (clean_environment / "conveyor-data").resolve()
        assert settings.max_projects_per_user == 2
        assert settings.allow_anonymous_read is False
        assert settings.auth_disabled is False


class TestEnvironment:
    def test_conveyor_prefixed_variables_are_read(
        self, clean_environment: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("CONVEYOR_PORT", "9123")
        monkeypatch.setenv("CONVEYOR_AUTH_DISABLED", "1")
        monkeypatch.setenv("CONVEYOR_DATABASE_URL", "postgresql+psycopg://u:p@db/conveyor")
        settings = Settings()
        assert settings.port == 9123
        assert settings.auth_disabled is True
        assert settings.database_url == "postgresql+psycopg://u:p@db/conveyor"

    def test_cicd_service_root_names_are_accepted_as_aliases(
        self, clean_environment: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("CICD_REPOS_ROOT", str(clean_environment / "old-repos"))
        monkeypatch.setenv("CICD_ARTIFACTS_ROOT", str(clean_environment / "old-artifacts"))
        settings = Settings()
        assert settings.repos_path == clean_environment / "old-repos"
        assert settings.artifacts_path == clean_environment / "old-artifacts"

    def test_dotenv_file_in_working_directory_is_read(self, clean_environment: Path) -> None:
        (clean_environment / ".env").write_text("CONVEYOR_PORT=8765\nCONVEYOR_AGENTS=0\n")
        settings = Settings()
        assert (settings.port, settings.agents) == (8765, 0)


class TestSessionSecretKey:
    def test_generated_key_is_kept_in_data_dir_and_reused(self, clean_environment: Path) -> None:
        data_dir = clean_environment / "data"
        first = Settings(data_dir=data_dir).session_secret_key()
        second = Settings(data_dir=data_dir).session_secret_key()
        assert first == second
        assert len(first) >= 32
        key_file = data_dir / "secret_key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    def test_configured_key_wins_and_nothing_is_written(
        self, clean_environment: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("CONVEYOR_SECRET_KEY", "s" * 40)
        settings = Settings(data_dir=clean_environment / "data")
        assert settings.session_secret_key() == "s" * 40
        assert not (clean_environment / "data" / "secret_key").exists()
