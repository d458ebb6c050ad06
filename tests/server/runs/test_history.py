"""A run's history, `GET /api/v1/runs/{id}/events`, through real HTTP on both
databases: who may read it, and what it says after real triggers, cancels, retries and
a lost agent."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.protocol.status import Status
from conveyor.server.agents import service as agents_service
from conveyor.server.config import Settings
from conveyor.server.db import dialect
from conveyor.server.models import Job, Role
from conveyor.server.runs.history import spoken_duration
from tests.fixtures.gitrepos import Repo
from tests.server.agents.queue import add_agent, claim, queue_job
from tests.server.agents.queue import add_project as add_bare_project
from tests.server.conftest import add_user
from tests.server.projects.factories import actor_headers, add_project, assert_error, bearer
from tests.server.runs.factories import PIPELINE, add_run


def _events(http: httpx.Client, run_id: int, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = http.get(f"/api/v1/runs/{run_id}/events", headers=headers)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()
    return events


def _lines(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(event["action"], event["actor"]) for event in events]


def _as_writer(session: Session) -> Session:
    # As the server's reaper does: on SQLite a read-then-write racing the server's
    # own writes would fail with "database is locked".
    session.commit()
    bind = session.get_bind()
    session.connection(execution_options=dialect.write_transaction_options(bind.engine))
    return session


class TestRunEventsPermissions:
    def test_whoever_may_read_the_run_reads_its_history(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        demo = add_project(db_session, "demo")
        run = add_run(db_session, demo, 1)
        statuses = {
            actor: http.get(f"/api/v1/runs/{run.id}/events", headers=headers).status_code
            for actor, headers in actor_headers(db_session, demo).items()
        }
        assert statuses == {
            "anonymous": 401,
            "viewer": 200,
            "developer": 200,
            "maintainer": 200,
            "admin": 200,
            "outsider": 403,
        }

    def test_denied_answers_say_nothing_of_the_history(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        demo = add_project(db_session, "demo")
        run = add_run(db_session, demo, 1, actor_name="secret-sam")
        outsider = actor_headers(db_session, demo)["outsider"]
        denied = http.get(f"/api/v1/runs/{run.id}/events", headers=outsider)
        assert_error(denied, 403)
        assert "secret-sam" not in denied.text

    def test_unknown_run_is_404(self, http: httpx.Client, db_session: Session) -> None:
        admin = bearer(db_session, add_user(db_session, "root", is_admin=True))
        assert_error(http.get("/api/v1/runs/424242/events", headers=admin), 404, "run_not_found")


class TestRunEventsContent:
    @pytest.fixture
    def repo(self, make_repo: Callable[..., Repo]) -> Repo:
        return make_repo({".conveyor.yml": PIPELINE})

    def test_trigger_cancel_and_finish_name_who_and_come_in_order(
        self, http: httpx.Client, db_session: Session, repo: Repo
    ) -> None:
        dev = add_user(db_session, "dev")
        mia = add_user(db_session, "mia")
        vera = add_user(db_session, "vera")
        add_project(
            db_session,
            "demo",
            repo.url,
            members={dev: Role.DEVELOPER, mia: Role.MAINTAINER, vera: Role.VIEWER},
        )
        run = http.post(
            "/api/v1/projects/demo/runs", headers=bearer(db_session, dev), json={}
        ).json()
        cancelled = http.post(f"/api/v1/runs/{run['id']}/cancel", headers=bearer(db_session, mia))
        assert cancelled.status_code == 200, cancelled.text

        events = _events(http, run["id"], bearer(db_session, vera))
        assert _lines(events) == [
            ("triggered", "dev"),
            ("cancelled", "mia"),
            ("finished", "system"),
        ]
        assert events[0]["details"] == f"api on branch main at commit {run['commit_sha'][:12]}"
        assert events[2]["details"] == "cancelled without starting"
        times = [datetime.fromisoformat(event["time"]) for event in events]
        assert times == sorted(times)
        assert times[2] == datetime.fromisoformat(cancelled.json()["finished_at"])

    def test_a_retry_shows_on_the_retried_run_and_on_the_new_one(
        self, http: httpx.Client, db_session: Session, repo: Repo
    ) -> None:
        dev = add_user(db_session, "dev")
        mia = add_user(db_session, "mia")
        add_project(
            db_session, "demo", repo.url, members={dev: Role.DEVELOPER, mia: Role.MAINTAINER}
        )
        first = http.post(
            "/api/v1/projects/demo/runs", headers=bearer(db_session, dev), json={}
        ).json()
        http.post(f"/api/v1/runs/{first['id']}/cancel", headers=bearer(db_session, dev))
        again = http.post(f"/api/v1/runs/{first['id']}/retry", headers=bearer(db_session, mia))
        assert again.status_code == 201, again.text
        admin = bearer(db_session, add_user(db_session, "root", is_admin=True))

        original = _events(http, first["id"], admin)
        assert _lines(original)[-1] == ("retried", "mia")
        assert original[-1]["details"] == "as run #2"
        new = _events(http, again.json()["id"], admin)
        assert _lines(new) == [("triggered", "mia")]
        assert new[0]["details"].endswith(", retry of #1")

    def test_a_job_whose_agent_was_lost_shows_its_start_and_its_requeue(
        self, http: httpx.Client, db_session: Session, server_settings: Settings
    ) -> None:
        project = add_bare_project(db_session, "p")
        job = queue_job(db_session, project, max_attempts=3)
        _, token = add_agent(db_session, "first-agent")
        claim(http, token)
        # The lease reaper's pass, five minutes on: the agent never heartbeat.
        later = datetime.now(UTC) + timedelta(minutes=5)
        released = agents_service.release_expired_leases(
            _as_writer(db_session), server_settings, now=later
        )
        assert released == [job.id]
        db_session.commit()
        admin = bearer(db_session, add_user(db_session, "root", is_admin=True))

        events = _events(http, job.run_id, admin)
        assert _lines(events) == [
            ("triggered", "system"),
            ("started", "agent first-agent"),
            ("requeued", "system"),
        ]
        assert events[1]["details"] == "job build started on agent first-agent, attempt 1"
        requeued = events[2]["details"]
        assert requeued.startswith("job build back in the queue: agent first-agent ")
        assert requeued.endswith(" lost (after attempt 1 of 3)")
        assert datetime.fromisoformat(events[2]["time"]) == later
        assert {event["job"] for event in events[1:]} == {"build"}

    def test_a_job_requeued_from_a_deleted_agent_shows_both_attempts(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        project = add_bare_project(db_session, "p")
        job = queue_job(db_session, project, max_attempts=3)
        first, first_token = add_agent(db_session, "first-agent")
        _, second_token = add_agent(db_session, "second-agent")
        claim(http, first_token)
        root = add_user(db_session, "root", is_admin=True)
        admin = bearer(db_session, root)
        deleted = http.delete(f"/api/v1/agents/{first.id}?force=true", headers=admin)
        assert deleted.status_code == 200, deleted.text
        jobs = claim(http, second_token)["jobs"]
        assert isinstance(jobs, list) and [spec["job_id"] for spec in jobs] == [job.id]

        events = _events(http, job.run_id, admin)
        assert _lines(events) == [
            ("triggered", "system"),
            ("started", "agent first-agent"),
            ("requeued", "system"),
            ("started", "agent second-agent"),
        ]
        assert events[2]["details"] == (
            "job build back in the queue: agent first-agent deleted (after attempt 1 of 3)"
        )
        assert events[3]["details"] == "job build started on agent second-agent, attempt 2"

    def test_finished_says_the_status_and_how_long_it_ran(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        demo = add_project(db_session, "demo")
        started = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
        run = add_run(
            db_session,
            demo,
            1,
            status=Status.FAILURE,
            created_at=started - timedelta(seconds=3),
            started_at=started,
            finished_at=started + timedelta(seconds=65),
        )
        for job in db_session.scalars(select(Job).where(Job.run_id == run.id)):
            job.started_at = started
        db_session.commit()
        admin = bearer(db_session, add_user(db_session, "root", is_admin=True))
        events = _events(http, run.id, admin)
        assert events[-1]["action"] == "finished"
        assert events[-1]["details"] == "failure after 1m 05s"
        assert datetime.fromisoformat(events[-1]["time"]) == started + timedelta(seconds=65)

    @pytest.mark.parametrize(
        ("event", "actor_name", "expected_actor", "said"),
        [
            ("push", "octocat", "webhook", "sent by octocat"),
            ("cron", "scheduler", "schedule", "cron on branch main"),
            ("push", "poller", "system", "the poller saw a new commit"),
        ],
    )
    def test_runs_nobody_started_by_hand_name_their_source(
        self,
        http: httpx.Client,
        db_session: Session,
        event: str,
        actor_name: str,
        expected_actor: str,
        said: str,
    ) -> None:
        demo = add_project(db_session, "demo")
        run = add_run(db_session, demo, 1, event=event, actor_name=actor_name)
        admin = bearer(db_session, add_user(db_session, "root", is_admin=True))
        (triggered,) = _events(http, run.id, admin)
        assert (triggered["action"], triggered["actor"]) == ("triggered", expected_actor)
        assert said in triggered["details"]


class TestSpokenDuration:
    @pytest.mark.parametrize(
        ("seconds", "words"),
        [(4.25, "4.2s"), (35.9, "35s"), (125, "2m 05s"), (3780, "1h 03m"), (-1, "0.0s")],
    )
    def test_reads_like_the_ui(self, seconds: float, words: str) -> None:
        assert spoken_duration(seconds) == words
