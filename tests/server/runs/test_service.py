"""The runs service as other parts call it (the agents' JobSpec, webhooks), on both databases."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.protocol.status import Status
from conveyor.server.config import Settings
from conveyor.server.models import Job, Role
from conveyor.server.runs import service as runs_service
from conveyor.server.runs.schemas import TriggerRequest
from conveyor.server.users import service as users_service
from tests.fixtures.gitrepos import Repo
from tests.server.conftest import add_user
from tests.server.projects.factories import add_project
from tests.server.runs.factories import PIPELINE


class TestTrigger:
    def test_records_the_event_given_and_queues_jobs(
        self,
        db_session: Session,
        server_settings: Settings,
        make_repo: Callable[..., Repo],
    ) -> None:
        repo = make_repo({".conveyor.yml": PIPELINE})
        dev = add_user(db_session, "dev")
        project = add_project(db_session, "demo", repo.url, members={dev: Role.DEVELOPER})
        actor = users_service.actor_for_user(db_session, dev)
        run = runs_service.trigger(
            db_session, server_settings, actor, project, TriggerRequest(event="manual")
        )
        db_session.commit()
        assert (run.event, run.number, run.status, run.commit_sha) == (
            "manual",
            1,
            Status.QUEUED,
            repo.head(),
        )


class TestJobSpecContext:
    def test_gives_the_run_and_project_of_a_job(
        self,
        db_session: Session,
        server_settings: Settings,
        make_repo: Callable[..., Repo],
    ) -> None:
        repo = make_repo({".conveyor.yml": PIPELINE})
        admin = add_user(db_session, "root", is_admin=True)
        project = add_project(db_session, "demo", repo.url)
        actor = users_service.actor_for_user(db_session, admin)
        run = runs_service.trigger(
            db_session,
            server_settings,
            actor,
            project,
            TriggerRequest(variables={"A": "1"}),
        )
        db_session.commit()
        job = db_session.scalars(select(Job)).one()
        found_run, found_project = runs_service.job_spec_context(db_session, job)
        assert (found_run.id, found_run.variables) == (run.id, {"A": "1"})
        assert found_project.name == "demo"
