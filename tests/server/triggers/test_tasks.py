"""The poller and the scheduler as they run: inside a real app served by uvicorn on
127.0.0.1 (lifespan and all), with a short tick, against a real git repository, on
both databases. Nothing calls a service by hand: the tests change the world (a commit,
a due time) and watch the duties react."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from conveyor.server.app import create_app
from conveyor.server.config import Settings
from conveyor.server.models import Role, Run, Schedule
from conveyor.server.users import service as users_service
from tests.fixtures.gitrepos import Repo
from tests.fixtures.servers import serve
from tests.server.conftest import add_user
from tests.server.projects.factories import add_project, bearer
from tests.server.runs.factories import PIPELINE

T = TypeVar("T")
TICK_SECONDS = 0.1
WAIT_SECONDS = 8.0


@dataclass
class RunningServer:
    client: httpx.Client
    factory: sessionmaker[Session]
    headers: dict[str, str]
    """A maintainer of project `demo`."""


@pytest.fixture
def repo(make_repo: Callable[..., Repo]) -> Repo:
    return make_repo({".conveyor.yml": PIPELINE})


@pytest.fixture
def server(fresh_database_url: str, tmp_path: Path, repo: Repo) -> Iterator[RunningServer]:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=fresh_database_url,
        agents=0,
        triggers_tick_seconds=TICK_SECONDS,
    )
    app = create_app(settings)
    with serve(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        factory: sessionmaker[Session] = app.state.session_factory
        with factory() as session:
            mia = add_user(session, "mia")
            demo = add_project(session, "demo", repo.url)
            users_service.set_membership(session, mia, demo, Role.MAINTAINER)
            session.commit()
            headers = bearer(session, mia)
        yield RunningServer(client, factory, headers)


def _runs(factory: sessionmaker[Session]) -> list[Run]:
    with factory() as session:
        return list(session.scalars(select(Run).order_by(Run.number)))


def _wait_for(probe: Callable[[], T], what: str) -> T:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(TICK_SECONDS / 2)
    raise AssertionError(f"within {WAIT_SECONDS}s: {what}")


class TestPollRepositoriesDuty:
    def test_commit_pushed_to_a_polled_repository_starts_one_run(
        self, server: RunningServer, repo: Repo
    ) -> None:
        response = server.client.put(
            "/api/v1/projects/demo/polling", headers=server.headers, json={"interval_seconds": 1}
        )
        assert response.status_code == 200, response.text

        def heads() -> dict[str, str] | None:
            polling = server.client.get("/api/v1/projects/demo/polling", headers=server.headers)
            found: dict[str, str] | None = polling.json()["heads"]
            return found

        # The first poll only records what is there.
        assert _wait_for(heads, "the first poll records the heads") == {"main": repo.head()}
        assert _runs(server.factory) == []

        repo.write("change.txt", "pushed")
        pushed = repo.commit("a pushed change")
        (run,) = _wait_for(lambda: _runs(server.factory), "the poller starts a run")
        assert (run.event, run.actor_name, run.branch, run.commit_sha) == (
            "push",
            "poller",
            "main",
            pushed,
        )
        assert _wait_for(lambda: heads() == {"main": pushed}, "the new head is recorded")
        time.sleep(1.5)  # at least one more poll: the same head builds nothing again
        assert len(_runs(server.factory)) == 1


class TestRunSchedulesDuty:
    def test_schedule_due_now_starts_exactly_one_cron_run(
        self, server: RunningServer, repo: Repo
    ) -> None:
        created = server.client.post(
            "/api/v1/projects/demo/schedules",
            headers=server.headers,
            json={"cron": "0 0 1 1 *", "variables": {"NIGHTLY": "1"}},
        )
        assert created.status_code == 201, created.text
        schedule_id = created.json()["id"]
        time.sleep(3 * TICK_SECONDS)
        assert _runs(server.factory) == []  # due next New Year, not now

        # The due time comes: the stored time is moved to just now (the clock is not the
        # test's to turn inside a running server; the row is).
        due = datetime.now(UTC) - timedelta(seconds=1)
        with server.factory() as session:
            session.execute(
                update(Schedule).where(Schedule.id == schedule_id).values(next_due_at=due)
            )
            session.commit()

        (run,) = _wait_for(lambda: _runs(server.factory), "the scheduler starts a run")
        assert (run.event, run.actor_name, run.branch, run.variables, run.commit_sha) == (
            "cron",
            "scheduler",
            "main",
            {"NIGHTLY": "1"},
            repo.head(),
        )
        time.sleep(5 * TICK_SECONDS)  # more passes of the scheduler
        assert len(_runs(server.factory)) == 1
        stored = server.client.get(
            f"/api/v1/projects/demo/schedules/{schedule_id}", headers=server.headers
        ).json()
        assert stored["last_run_id"] == run.id and stored["last_error"] is None
        next_due = datetime.fromisoformat(stored["next_due_at"].replace("Z", "+00:00"))
        assert (next_due.month, next_due.day, next_due.hour) == (1, 1, 0)
        assert next_due.year == due.year + 1
