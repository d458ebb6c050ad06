"""Cancel and retry through real HTTP, on both databases."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.protocol.status import Status
from conveyor.server.models import Job, Role, Run
from tests.fixtures.gitrepos import Repo
from tests.server.conftest import add_user
from tests.server.projects.factories import actor_headers, add_project, assert_error, bearer
from tests.server.runs.factories import PIPELINE, add_run


def _status_of(session: Session, run_id: int) -> tuple[Status, list[Status]]:
    session.expire_all()
    run = session.get(Run, run_id)
    assert run is not None
    jobs = session.scalars(select(Job.status).where(Job.run_id == run_id).order_by(Job.id))
    return run.status, list(jobs)


class TestCancelRun:
    def test_queued_run_and_its_jobs_become_cancelled(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        dev = add_user(db_session, "dev")
        demo = add_project(db_session, "demo", members={dev: Role.DEVELOPER})
        run = add_run(db_session, demo, 1, jobs=2)
        response = http.post(f"/api/v1/runs/{run.id}/cancel", headers=bearer(db_session, dev))
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "cancelled"
        assert _status_of(db_session, run.id) == (
            Status.CANCELLED,
            [Status.CANCELLED, Status.CANCELLED],
        )

    def test_running_run_is_cancelled(self, http: httpx.Client, db_session: Session) -> None:
        dev = add_user(db_session, "dev")
        demo = add_project(db_session, "demo", members={dev: Role.DEVELOPER})
        run = add_run(db_session, demo, 1, status=Status.RUNNING)
        response = http.post(f"/api/v1/runs/{run.id}/cancel", headers=bearer(db_session, dev))
        assert response.status_code == 200, response.text
        assert _status_of(db_session, run.id) == (Status.CANCELLED, [Status.CANCELLED])

    @pytest.mark.parametrize("finished", [Status.SUCCESS, Status.FAILURE, Status.CANCELLED])
    def test_finished_run_is_409_not_cancellable(
        self, http: httpx.Client, db_session: Session, finished: Status
    ) -> None:
        dev = add_user(db_session, "dev")
        demo = add_project(db_session, "demo", members={dev: Role.DEVELOPER})
        run = add_run(db_session, demo, 1, status=finished)
        response = http.post(f"/api/v1/runs/{run.id}/cancel", headers=bearer(db_session, dev))
        error = assert_error(response, 409, "run_not_cancellable")
        assert str(finished) in str(error["message"])
        assert _status_of(db_session, run.id)[0] is finished

    def test_unknown_run_is_404(self, http: httpx.Client, db_session: Session) -> None:
        admin = bearer(db_session, add_user(db_session, "root", is_admin=True))
        assert_error(http.post("/api/v1/runs/424242/cancel", headers=admin), 404, "run_not_found")

    def test_permission_matrix(self, http: httpx.Client, db_session: Session) -> None:
        demo = add_project(db_session, "demo")
        headers = actor_headers(db_session, demo)
        statuses = {}
        for number, (actor, actor_headers_) in enumerate(headers.items(), start=1):
            run = add_run(db_session, demo, number)
            statuses[actor] = http.post(
                f"/api/v1/runs/{run.id}/cancel", headers=actor_headers_
            ).status_code
        assert statuses == {
            "anonymous": 401,
            "viewer": 403,
            "developer": 200,
            "maintainer": 200,
            "admin": 200,
            "outsider": 403,
        }


class TestRetryRun:
    @pytest.fixture
    def repo(self, make_repo: Callable[..., Repo]) -> Repo:
        repo = make_repo({".conveyor.yml": PIPELINE})
        repo.git("checkout", "-q", "-b", "feature")
        repo.write("x.txt", "x")
        repo.commit("feature commit")
        return repo

    def test_new_run_of_the_same_commit_ref_and_variables_by_the_retrier(
        self, http: httpx.Client, db_session: Session, repo: Repo
    ) -> None:
        dev = add_user(db_session, "dev")
        mia = add_user(db_session, "mia")
        add_project(
            db_session, "demo", repo.url, members={dev: Role.DEVELOPER, mia: Role.MAINTAINER}
        )
        first = http.post(
            "/api/v1/projects/demo/runs",
            headers=bearer(db_session, dev),
            json={"branch": "feature", "variables": {"MODE": "fast"}, "priority": 3},
        ).json()
        http.post(f"/api/v1/runs/{first['id']}/cancel", headers=bearer(db_session, dev))
        sha = first["commit_sha"]
        repo.write("y.txt", "moved on")
        repo.commit("the branch moved on")

        response = http.post(f"/api/v1/runs/{first['id']}/retry", headers=bearer(db_session, mia))
        assert response.status_code == 201, response.text
        again = response.json()
        assert again["id"] != first["id"]
        assert (again["number"], again["status"], again["created_by"]) == (2, "queued", "mia")
        assert (again["commit_sha"], again["branch"], again["variables"]) == (
            sha,
            "feature",
            {"MODE": "fast"},
        )
        assert again["commit_message"] == "feature commit"
        assert [job["priority"] for job in again["jobs"]] == [3]
        assert _status_of(db_session, first["id"])[0] is Status.CANCELLED

    def test_unfinished_run_is_409_not_retryable(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        dev = add_user(db_session, "dev")
        demo = add_project(db_session, "demo", members={dev: Role.DEVELOPER})
        run = add_run(db_session, demo, 1, status=Status.RUNNING)
        response = http.post(f"/api/v1/runs/{run.id}/retry", headers=bearer(db_session, dev))
        assert_error(response, 409, "run_not_retryable")
        assert len(db_session.scalars(select(Run)).all()) == 1

    def test_permission_matrix(self, http: httpx.Client, db_session: Session, repo: Repo) -> None:
        demo = add_project(db_session, "demo", repo.url)
        headers = actor_headers(db_session, demo)
        original = add_run(db_session, demo, 1, status=Status.FAILURE, branch="feature")
        original.commit_sha = repo.head()
        db_session.commit()
        statuses = {
            actor: http.post(f"/api/v1/runs/{original.id}/retry", headers=h).status_code
            for actor, h in headers.items()
        }
        assert statuses == {
            "anonymous": 401,
            "viewer": 403,
            "developer": 201,
            "maintainer": 201,
            "admin": 201,
            "outsider": 403,
        }
        numbers = db_session.scalars(select(Run.number).order_by(Run.number)).all()
        assert list(numbers) == [1, 2, 3, 4]
