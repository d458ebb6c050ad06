"""Polling and cron schedules against real git repositories, with a clock the tests hold."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from conveyor.server.config import Settings
from conveyor.server.models import Run, Schedule
from conveyor.server.triggers import service
from conveyor.server.triggers.schemas import PollingPut, ScheduleCreate
from conveyor.server.users.authorization import Actor
from tests.fixtures.gitrepos import Repo
from tests.server.projects.factories import add_project
from tests.server.runs.factories import PIPELINE

T0 = datetime(2026, 3, 2, 10, 2, tzinfo=UTC)
ADMIN = Actor(user_id=None, name="root", is_admin=True, is_service=True)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url, agents=0)


@pytest.fixture
def repo(make_repo: Callable[..., Repo]) -> Repo:
    return make_repo({".conveyor.yml": PIPELINE})


def _heads(factory: sessionmaker[Session]) -> dict[str, str] | None:
    with factory() as session:
        return service.get_polling(session, ADMIN, "demo").heads


def _runs(factory: sessionmaker[Session]) -> list[Run]:
    with factory() as session:
        return list(session.scalars(select(Run).order_by(Run.number)))


class TestPollDue:
    def test_first_poll_records_heads_and_starts_nothing(
        self, factory: sessionmaker[Session], db_session: Session, settings: Settings, repo: Repo
    ) -> None:
        add_project(db_session, "demo", repo.url)
        service.set_polling(db_session, ADMIN, "demo", PollingPut(interval_seconds=60), T0)
        db_session.commit()
        outcome = service.poll_due(factory, settings, T0)
        assert outcome.polled == ["demo"] and outcome.run_ids == []
        assert _heads(factory) == {"main": repo.head()}
        assert _runs(factory) == []

    def test_new_commit_starts_one_push_run_by_the_poller_once_due(
        self, factory: sessionmaker[Session], db_session: Session, settings: Settings, repo: Repo
    ) -> None:
        add_project(db_session, "demo", repo.url)
        service.set_polling(db_session, ADMIN, "demo", PollingPut(interval_seconds=60), T0)
        db_session.commit()
        service.poll_due(factory, settings, T0)
        repo.write("a.txt", "a")
        new_head = repo.commit("second")
        assert service.poll_due(factory, settings, T0 + timedelta(seconds=30)).polled == []
        outcome = service.poll_due(factory, settings, T0 + timedelta(seconds=60))
        assert len(outcome.run_ids) == 1, outcome
        (run,) = _runs(factory)
        assert (run.event, run.actor_name, run.branch, run.commit_sha) == (
            "push",
            "poller",
            "main",
            new_head,
        )
        again = service.poll_due(factory, settings, T0 + timedelta(seconds=120))
        assert again.run_ids == []

    def test_branch_outside_the_filter_is_recorded_but_not_built(
        self, factory: sessionmaker[Session], db_session: Session, settings: Settings, repo: Repo
    ) -> None:
        add_project(db_session, "demo", repo.url, branch_filter="main")
        service.set_polling(db_session, ADMIN, "demo", PollingPut(interval_seconds=10), T0)
        db_session.commit()
        service.poll_due(factory, settings, T0)
        repo.git("checkout", "-q", "-b", "feature/x")
        repo.write("b.txt", "b")
        repo.commit("feature work")
        repo.git("checkout", "-q", "main")
        repo.write("c.txt", "c")
        main_head = repo.commit("main work")
        outcome = service.poll_due(factory, settings, T0 + timedelta(seconds=10))
        assert [(r.branch, r.commit_sha) for r in _runs(factory)] == [("main", main_head)]
        assert outcome.errors == {}
        assert "feature/x" in (_heads(factory) or {})

    def test_polling_switched_off_polls_nothing(
        self, factory: sessionmaker[Session], db_session: Session, settings: Settings, repo: Repo
    ) -> None:
        add_project(db_session, "demo", repo.url)
        service.set_polling(db_session, ADMIN, "demo", PollingPut(interval_seconds=10), T0)
        service.set_polling(db_session, ADMIN, "demo", PollingPut(interval_seconds=None), T0)
        db_session.commit()
        assert service.poll_due(factory, settings, T0 + timedelta(hours=1)).polled == []


class TestNextDue:
    def test_cron_is_read_in_the_schedule_time_zone(self) -> None:
        after = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
        assert service.next_due("0 3 * * *", "Europe/Berlin", after) == datetime(
            2026, 1, 1, 2, 0, tzinfo=UTC
        )
        assert service.next_due("0 3 * * *", "UTC", after) == datetime(2026, 1, 1, 3, tzinfo=UTC)


class TestRunDueSchedules:
    def _schedule(self, db_session: Session, settings: Settings, cron: str = "*/5 * * * *") -> int:
        body = ScheduleCreate(cron=cron, variables={"NIGHTLY": "1"})
        schedule = service.create_schedule(db_session, settings, ADMIN, "demo", body, T0)
        db_session.commit()
        return schedule.id

    def test_due_schedule_starts_one_cron_run_and_never_twice_for_one_due_time(
        self, factory: sessionmaker[Session], db_session: Session, settings: Settings, repo: Repo
    ) -> None:
        add_project(db_session, "demo", repo.url)
        schedule_id = self._schedule(db_session, settings)
        assert service.run_due_schedules(factory, settings, T0 + timedelta(minutes=2)).run_ids == []
        due = T0 + timedelta(minutes=3, seconds=10)  # 10:05:10
        outcome = service.run_due_schedules(factory, settings, due)
        assert len(outcome.run_ids) == 1
        assert service.run_due_schedules(factory, settings, due).run_ids == []
        (run,) = _runs(factory)
        assert (run.event, run.actor_name, run.branch, run.variables) == (
            "cron",
            "scheduler",
            "main",
            {"NIGHTLY": "1"},
        )
        with factory() as session:
            schedule = session.get(Schedule, schedule_id)
            assert schedule is not None
            assert schedule.next_due_at == datetime(2026, 3, 2, 10, 10, tzinfo=UTC)
            assert schedule.last_run_id == run.id

    def test_second_claim_of_one_due_time_loses(
        self, factory: sessionmaker[Session], db_session: Session, settings: Settings, repo: Repo
    ) -> None:
        from conveyor.server.triggers.repository import ScheduleRepository

        add_project(db_session, "demo", repo.url)
        schedule_id = self._schedule(db_session, settings)
        due = datetime(2026, 3, 2, 10, 5, tzinfo=UTC)
        later = due + timedelta(minutes=5)
        with factory() as first:
            assert ScheduleRepository(first).claim(schedule_id, due, later)
            first.commit()
        with factory() as second:
            assert not ScheduleRepository(second).claim(schedule_id, due, later)
            second.commit()

    def test_schedule_of_missing_branch_records_the_error(
        self, factory: sessionmaker[Session], db_session: Session, settings: Settings, repo: Repo
    ) -> None:
        add_project(db_session, "demo", repo.url)
        body = ScheduleCreate(cron="*/5 * * * *", branch="gone")
        schedule = service.create_schedule(db_session, settings, ADMIN, "demo", body, T0)
        db_session.commit()
        outcome = service.run_due_schedules(factory, settings, T0 + timedelta(minutes=5))
        assert outcome.run_ids == [] and schedule.id in outcome.errors
        with factory() as session:
            stored = session.get(Schedule, schedule.id)
            assert stored is not None and stored.last_error
