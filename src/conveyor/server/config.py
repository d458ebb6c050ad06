"""The server's settings: environment variables `CONVEYOR_*`, an optional `.env`, defaults.

Every path defaults to a place inside `data_dir`, so one variable moves the whole
installation. The FastAPI cicd service's names `CICD_REPOS_ROOT` and `CICD_ARTIFACTS_ROOT`
are accepted as aliases so its deployments keep their layout.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Self

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from conveyor.agent import cache_dir_of, mirrors_dir_of

SECRET_KEY_FILE_NAME = "secret_key"  # noqa: S105  (a file name, not a secret)
DATABASE_FILE_NAME = "conveyor.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CONVEYOR_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    data_dir: Path = Path("./conveyor-data")
    database_url: str = ""
    """SQLAlchemy URL; empty means a SQLite file in `data_dir`. PostgreSQL:
    `postgresql+psycopg://user:password@host:5432/conveyor`."""
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    auth_disabled: bool = False
    """Development only: every request acts as the admin user. Logged loudly at each start."""
    agents: int = Field(default=1, ge=0)
    """Slots of the embedded agent; 0 starts none."""
    embedded_backend: str = ""
    """Backend of the embedded agent; empty: docker when an engine answers, else local."""
    lease_seconds: float = Field(default=60.0, gt=0)
    """How long a claimed job's lease lives without a heartbeat."""
    heartbeat_seconds: float = Field(default=10.0, gt=0)
    """Seconds between an agent's heartbeats (told to agents when they register)."""
    retry_backoff_seconds: float = Field(default=10.0, ge=0)
    """A job put back in the queue because its agent was lost waits this long before it
    may be claimed again, doubled for each further attempt (0: no wait)."""
    retry_backoff_max_seconds: float = Field(default=300.0, ge=0)
    """The longest such wait, however many attempts came before."""
    job_timeout_grace_seconds: float = Field(default=60.0, ge=0)
    """How long past a job's timeout the server waits for its agent's report before it
    ends the job itself (`error`); the agent enforces the timeout, this is a backstop."""
    secret_key: SecretStr | None = None
    """Signs session cookies; when absent one is generated and kept in `data_dir`."""
    max_projects_per_user: int = Field(default=2, ge=0)
    public_base_url: str = ""
    """The address users reach the server at (for links and the cookie's Secure flag)."""
    allow_anonymous_read: bool = False
    repos_dir: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("repos_dir", "CONVEYOR_REPOS_DIR", "CICD_REPOS_ROOT"),
    )
    """Bare git mirrors; default `data_dir/repos`."""
    artifacts_dir: Path | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "artifacts_dir", "CONVEYOR_ARTIFACTS_DIR", "CICD_ARTIFACTS_ROOT"
        ),
    )
    """Artifact root; default `data_dir/artifacts`."""
    webhook_max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    """Largest webhook body accepted; bigger deliveries are answered 413."""
    outbound_allow: list[str] = Field(default_factory=list)
    """CIDRs or host names that notifications and commit statuses may call although they
    are loopback, private or link-local (e.g. `["10.0.0.0/8", "git.internal"]`)."""
    outbound_deny: list[str] = Field(default_factory=list)
    """CIDRs or host names that outbound calls may never reach (checked before the allow
    list)."""
    smtp_host: str = ""
    """SMTP server for e-mail notifications; empty: e-mail hooks fail with a clear error."""
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_from: str = "conveyor@localhost"
    smtp_user: str = ""
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    time_zone: str = ""
    """IANA name of the server's time zone for cron schedules; empty: UTC."""
    triggers_tick_seconds: float = Field(default=5.0, gt=0)
    """How often the polling and schedule duties look for due work."""
    notification_attempts: int = Field(default=4, ge=1, le=20)
    """Attempts per notification or commit status before it is recorded as failed."""
    notification_retry_seconds: float = Field(default=10.0, gt=0)
    """Wait before the first retry; each further retry waits twice as long."""
    outbound_timeout_seconds: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _fill_paths_from_data_dir(self) -> Self:
        # Resolved once here so that a later chdir cannot move the installation.
        self.data_dir = self.data_dir.expanduser().resolve()
        if self.repos_dir is None:
            self.repos_dir = self.data_dir / "repos"
        if self.artifacts_dir is None:
            self.artifacts_dir = self.data_dir / "artifacts"
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / DATABASE_FILE_NAME}"
        return self

    @property
    def repos_path(self) -> Path:
        assert self.repos_dir is not None  # filled by the validator
        return self.repos_dir

    @property
    def artifacts_path(self) -> Path:
        assert self.artifacts_dir is not None  # filled by the validator
        return self.artifacts_dir

    @property
    def embedded_agent_dir(self) -> Path:
        """The embedded agent's `--work-dir`: its workspaces and its cache of mirrors."""
        return self.data_dir / "agent"

    @property
    def embedded_agent_mirrors(self) -> Path:
        """Where the embedded agent keeps its bare mirrors (one per repository URL,
        named as the server's own are): a deleted project's goes with it."""
        return mirrors_dir_of(cache_dir_of(self.embedded_agent_dir))

    @property
    def secure_cookies(self) -> bool:
        return self.public_base_url.startswith("https://")

    def session_secret_key(self) -> str:
        """The key that signs session cookies: the configured one, else the one kept in
        `data_dir/secret_key`, created (readable by the owner only) on first use so that
        sessions survive restarts."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        key_file = self.data_dir / SECRET_KEY_FILE_NAME
        if key_file.exists():
            return key_file.read_text(encoding="utf-8").strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        # O_EXCL: when two processes start together, the first key written wins.
        try:
            descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return key_file.read_text(encoding="utf-8").strip()
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(key + "\n")
        return key
