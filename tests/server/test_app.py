"""The application through real HTTP: probes, error rendering, first start, dev mode."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine

from conveyor.server.app import create_app
from conveyor.server.config import Settings
from conveyor.server.db.migrate import downgrade_engine, upgrade_engine
from tests.fixtures.servers import serve


class TestHealthz:
    def test_answers_ok(self, http: httpx.Client) -> None:
        response = http.get("/healthz")
        assert (response.status_code, response.json()) == (200, {"status": "ok"})


class TestReadyz:
    def test_ready_when_database_answers_at_head(self, http: httpx.Client) -> None:
        response = http.get("/readyz")
        assert (response.status_code, response.json()) == (200, {"status": "ready"})

    def test_503_while_migrations_are_pending_then_ready_again(
        self, http: httpx.Client, migrated_engine: Engine
    ) -> None:
        downgrade_engine(migrated_engine, "base")
        try:
            response = http.get("/readyz")
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "migrations_pending"
            assert "conveyor db upgrade" in response.json()["error"]["message"]
        finally:
            upgrade_engine(migrated_engine)
        assert http.get("/readyz").status_code == 200

    def test_503_when_the_database_is_gone(self, fresh_database_url: str, tmp_path: Path) -> None:
        app = create_app(Settings(data_dir=tmp_path / "data", database_url=fresh_database_url))
        with serve(app) as url, httpx.Client(base_url=url) as client:
            assert client.get("/readyz").status_code == 200
            _make_database_unreachable(app, fresh_database_url)
            response = client.get("/readyz")
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "database_unreachable"
            assert client.get("/healthz").status_code == 200


def _make_database_unreachable(app: FastAPI, url: str) -> None:
    engine: Engine = app.state.engine
    engine.dispose()
    if url.startswith("sqlite"):
        database_file = Path(url.removeprefix("sqlite:///"))
        database_file.unlink()
        for leftover in database_file.parent.glob(database_file.name + "-*"):
            leftover.unlink()
        # A directory where the file was: SQLite cannot open (or recreate) it.
        database_file.mkdir()
    else:
        import psycopg
        from sqlalchemy import make_url

        parsed = make_url(url)
        admin_url = parsed.set(drivername="postgresql", database="postgres")
        with psycopg.connect(
            admin_url.render_as_string(hide_password=False), autocommit=True
        ) as admin:
            admin.execute(f'DROP DATABASE "{parsed.database}" WITH (FORCE)')


class TestErrorShape:
    def test_unknown_endpoint_is_404_in_the_error_shape(self, http: httpx.Client) -> None:
        response = http.get("/api/v1/no-such-thing")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
        assert set(response.json()["error"]) == {"code", "message", "detail"}

    def test_wrong_method_is_405_in_the_error_shape(self, http: httpx.Client) -> None:
        response = http.put("/api/v1/session")
        assert response.status_code == 405
        assert response.json()["error"]["code"] == "method_not_allowed"

    def test_unexpected_failure_is_500_without_a_traceback(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        app = create_app(Settings(data_dir=tmp_path))

        def explode() -> None:
            raise RuntimeError("secret internals at /srv/conveyor/file.py line 12")

        app.add_api_route("/explode", explode)
        with serve(app) as url, httpx.Client(base_url=url) as client:
            response = client.get("/explode")
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "internal_error"
        assert "secret internals" not in response.text
        assert "Traceback" not in response.text
        logged = [
            record
            for record in caplog.records
            if record.name == "conveyor.server" and "GET /explode" in record.getMessage()
        ]
        assert logged and logged[0].exc_info is not None


class TestOpenApi:
    def test_schema_is_served_under_api_v1(self, http: httpx.Client) -> None:
        response = http.get("/api/v1/openapi.json")
        assert response.status_code == 200
        paths = response.json()["paths"]
        assert {"/api/v1/session", "/api/v1/user", "/api/v1/user/tokens", "/api/v1/users"} <= set(
            paths
        )


class TestFirstStart:
    def test_prints_a_one_time_admin_password_that_signs_in(
        self, fresh_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        settings = Settings(data_dir=tmp_path / "data", database_url=fresh_database_url)
        with serve(create_app(settings)) as url, httpx.Client(base_url=url) as client:
            printed = capsys.readouterr().out
            match = re.search(r"name 'admin', password '([^']+)'", printed)
            assert match, printed
            response = client.post(
                "/api/v1/session", json={"name": "admin", "password": match.group(1)}
            )
            assert response.status_code == 200
            assert response.json()["is_admin"] is True
        with serve(create_app(settings)):
            assert "password" not in capsys.readouterr().out


class TestAuthDisabled:
    def test_every_request_is_the_admin_and_each_start_warns_loudly(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        settings = Settings(data_dir=tmp_path, auth_disabled=True)
        for _start in range(2):
            caplog.clear()
            with (
                caplog.at_level(logging.WARNING, logger="conveyor.server"),
                serve(create_app(settings)) as url,
                httpx.Client(base_url=url) as client,
            ):
                me = client.get("/api/v1/user")
            assert me.status_code == 200
            assert me.json()["is_admin"] is True
            assert any(
                "AUTHENTICATION IS DISABLED" in record.getMessage() for record in caplog.records
            )

    def test_with_auth_on_the_same_request_is_refused(self, tmp_path: Path) -> None:
        with serve(create_app(Settings(data_dir=tmp_path))) as url:
            assert httpx.get(f"{url}/api/v1/user").status_code == 401


class TestWhatAnIdleServerLoads:
    """Libraries that only some requests need load at their first use: an idle server
    on SQLite does not hold them (about 6 MiB together; `bench/server.py` (d))."""

    def test_creating_the_app_leaves_them_out(self, tmp_path: Path) -> None:
        script = (
            "import sys\n"
            "import conveyor.cli.main\n"  # `conveyor server` loads the command line first
            "from conveyor.server.app import create_app\n"
            "from conveyor.server.config import Settings\n"
            f"create_app(Settings(data_dir={str(tmp_path)!r}, agents=0))\n"
            "print(' '.join(sorted(k for k, v in sys.modules.items() if v is not None)))\n"
        )
        loaded = set(
            subprocess.run(
                [sys.executable, "-c", script], capture_output=True, text=True, check=True
            ).stdout.split()
        )
        assert "conveyor.server.app" in loaded
        lazy = {
            "jinja2",  # pages and notification templates
            "yaml",  # pipeline files
            "conveyor.pipeline.loading",
            "croniter",  # schedules
            "sqlalchemy.dialects.postgresql",  # PostgreSQL only
            "alembic",  # migrations run in a child process
            "smtplib",  # e-mail notifications
            "ctypes",  # the embedded agent's parent-death signal, in the agent's process
            # Never needed: what the caps on FastAPI and Typer in pyproject.toml avoid.
            "opentelemetry",  # imported by FastAPI 0.142 and later
            "typer._click",  # Typer 0.26 and later's own copy of click, beside uvicorn's
            "pydantic.v1",  # FastAPI's check for pydantic 1 models (conveyor.server)
        }
        assert lazy & loaded == set()

    def test_fastapi_serves_without_pydantic_v1(self, tmp_path: Path) -> None:
        # Marked missing by `conveyor.server`: FastAPI finds no pydantic 1 model, and
        # serialises what its encoder meets last (an object of no known type) as before.
        script = (
            "import sys\n"
            "from conveyor.server.app import create_app\n"
            "from conveyor.server.config import Settings\n"
            "from fastapi.encoders import jsonable_encoder\n"
            "class Pair:\n"
            "    def __iter__(self):\n"
            "        return iter([('a', 1)])\n"
            f"create_app(Settings(data_dir={str(tmp_path)!r}, agents=0))\n"
            "print(sys.modules['pydantic.v1'], jsonable_encoder({'x': Pair()}))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        ).stdout
        assert out.split() == ["None", "{'x':", "{'a':", "1}}"]
