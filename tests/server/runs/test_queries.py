"""Run queries and the tasks view through real HTTP, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.protocol.status import Status
from conveyor.server.db.base import utcnow
from conveyor.server.models import Agent, Job, Project, Role, Step, Visibility
from conveyor.server.models.user import User
from tests.server.conftest import add_user
from tests.server.projects.factories import actor_headers, add_project, assert_error, bearer
from tests.server.runs.factories import add_run

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def ada(db_session: Session) -> User:
    return add_user(db_session, "ada")


@pytest.fixture
def history(db_session: Session, ada: User) -> dict[str, Project]:
    """Two projects ada reads and one she does not, with runs of several kinds."""
    demo = add_project(db_session, "demo", members={ada: Role.VIEWER})
    lib = add_project(db_session, "lib", visibility=Visibility.PUBLIC)
    hidden = add_project(db_session, "hidden")
    add_run(db_session, demo, 1, status=Status.SUCCESS, created_at=T0, actor_name="ada")
    add_run(
        db_session,
        demo,
        2,
        status=Status.FAILURE,
        created_at=T0 + timedelta(hours=1),
        branch="dev",
        actor_name="bob",
        event="push",
    )
    add_run(
        db_session,
        demo,
        3,
        status=Status.RUNNING,
        created_at=T0 + timedelta(hours=2),
        started_at=T0 + timedelta(hours=2, seconds=30),
    )
    add_run(
        db_session,
        lib,
        1,
        status=Status.QUEUED,
        created_at=T0 + timedelta(hours=3),
        actor_name="bob",
        event="cron",
    )
    add_run(db_session, hidden, 1, status=Status.QUEUED, created_at=T0 + timedelta(hours=4))
    return {"demo": demo, "lib": lib, "hidden": hidden}


def _keys(page: dict[str, object]) -> list[tuple[str, int]]:
    items = page["items"]
    assert isinstance(items, list)
    return [(item["project"], item["number"]) for item in items]


class TestListRuns:
    def test_lists_readable_runs_newest_first(
        self, http: httpx.Client, db_session: Session, ada: User, history: dict[str, Project]
    ) -> None:
        page = http.get("/api/v1/runs", headers=bearer(db_session, ada)).json()
        assert _keys(page) == [("lib", 1), ("demo", 3), ("demo", 2), ("demo", 1)]
        assert (page["page"], page["per_page"], page["total"]) == (1, 20, 4)

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            ({"status": "failure"}, [("demo", 2)]),
            ({"project": "lib"}, [("lib", 1)]),
            ({"branch": "dev"}, [("demo", 2)]),
            ({"created_by": "bob"}, [("lib", 1), ("demo", 2)]),
            ({"event": "cron"}, [("lib", 1)]),
            ({"since": "2026-03-01T13:00:00Z"}, [("lib", 1), ("demo", 3), ("demo", 2)]),
            ({"until": "2026-03-01T13:00:00+00:00"}, [("demo", 2), ("demo", 1)]),
            (
                {"since": "2026-03-01T12:30:00", "until": "2026-03-01T14:30:00", "project": "demo"},
                [("demo", 3), ("demo", 2)],
            ),
        ],
    )
    def test_filters(
        self,
        http: httpx.Client,
        db_session: Session,
        ada: User,
        history: dict[str, Project],
        query: dict[str, str],
        expected: list[tuple[str, int]],
    ) -> None:
        response = http.get("/api/v1/runs", headers=bearer(db_session, ada), params=query)
        assert response.status_code == 200, response.text
        assert _keys(response.json()) == expected

    def test_pagination(
        self, http: httpx.Client, db_session: Session, ada: User, history: dict[str, Project]
    ) -> None:
        headers = bearer(db_session, ada)
        first = http.get("/api/v1/runs", headers=headers, params={"per_page": 3}).json()
        second = http.get("/api/v1/runs", headers=headers, params={"per_page": 3, "page": 2}).json()
        assert _keys(first) == [("lib", 1), ("demo", 3), ("demo", 2)]
        assert _keys(second) == [("demo", 1)]
        assert first["total"] == second["total"] == 4
        beyond = http.get("/api/v1/runs", headers=headers, params={"page": 9}).json()
        assert (beyond["items"], beyond["total"]) == ([], 4)

    @pytest.mark.parametrize(
        "query",
        [{"per_page": "101"}, {"page": "0"}, {"status": "bogus"}, {"since": "yesterday"}],
    )
    def test_bad_query_is_422(
        self, http: httpx.Client, db_session: Session, ada: User, query: dict[str, str]
    ) -> None:
        response = http.get("/api/v1/runs", headers=bearer(db_session, ada), params=query)
        assert_error(response, 422, "invalid_input")

    def test_filtering_on_an_unreadable_project_is_refused(
        self, http: httpx.Client, db_session: Session, ada: User, history: dict[str, Project]
    ) -> None:
        headers = bearer(db_session, ada)
        hidden = http.get("/api/v1/runs", headers=headers, params={"project": "hidden"})
        assert_error(hidden, 403, "permission_denied")
        missing = http.get("/api/v1/runs", headers=headers, params={"project": "nope"})
        assert_error(missing, 404, "project_not_found")

    def test_anonymous_is_401(self, http: httpx.Client, db_session: Session) -> None:
        assert_error(http.get("/api/v1/runs"), 401, "not_authenticated")


class TestListProjectRuns:
    def test_lists_one_projects_runs_with_filters(
        self, http: httpx.Client, db_session: Session, ada: User, history: dict[str, Project]
    ) -> None:
        headers = bearer(db_session, ada)
        page = http.get("/api/v1/projects/demo/runs", headers=headers).json()
        assert _keys(page) == [("demo", 3), ("demo", 2), ("demo", 1)]
        filtered = http.get(
            "/api/v1/projects/demo/runs", headers=headers, params={"status": "success"}
        ).json()
        assert _keys(filtered) == [("demo", 1)]

    def test_unknown_and_unreadable_projects(
        self, http: httpx.Client, db_session: Session, ada: User, history: dict[str, Project]
    ) -> None:
        headers = bearer(db_session, ada)
        assert_error(http.get("/api/v1/projects/nope/runs", headers=headers), 404)
        assert_error(http.get("/api/v1/projects/hidden/runs", headers=headers), 403)


class TestReadRun:
    def test_shows_run_jobs_steps_agent_and_timings(
        self, http: httpx.Client, db_session: Session, ada: User
    ) -> None:
        demo = add_project(db_session, "demo", members={ada: Role.VIEWER})
        run = add_run(
            db_session,
            demo,
            7,
            status=Status.SUCCESS,
            created_at=T0,
            started_at=T0 + timedelta(seconds=4),
            finished_at=T0 + timedelta(seconds=64),
        )
        agent = Agent(name="builder-1", labels=["linux"])
        db_session.add(agent)
        db_session.flush()
        job = db_session.scalars(select(Job)).one()
        job.agent_id = agent.id
        job.attempts = 1
        job.started_at = T0 + timedelta(seconds=4)
        job.finished_at = T0 + timedelta(seconds=64)
        step = db_session.scalars(select(Step)).one()
        step.exit_code = 0
        step.log_line_count, step.log_byte_size = 12, 345
        db_session.commit()

        response = http.get(f"/api/v1/runs/{run.id}", headers=bearer(db_session, ada))
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["project"], body["number"], body["status"]) == ("demo", 7, "success")
        assert (body["queued_seconds"], body["duration_seconds"]) == (4.0, 60.0)
        assert body["commit_author"] == "Ada Tester <ada@example.test>"
        (job_body,) = body["jobs"]
        assert (job_body["agent"], job_body["attempts"], job_body["duration_seconds"]) == (
            "builder-1",
            1,
            60.0,
        )
        assert job_body["steps"] == [
            {
                "id": step.id,
                "index": 0,
                "name": "build",
                "status": "success",
                "exit_code": 0,
                "started_at": None,
                "finished_at": None,
                "log_lines": 12,
                "log_bytes": 345,
            }
        ]

    def test_queued_run_counts_its_wait_so_far_and_has_no_duration(
        self, http: httpx.Client, db_session: Session, ada: User
    ) -> None:
        demo = add_project(db_session, "demo", members={ada: Role.VIEWER})
        run = add_run(db_session, demo, 1, created_at=utcnow() - timedelta(seconds=30))
        body = http.get(f"/api/v1/runs/{run.id}", headers=bearer(db_session, ada)).json()
        assert body["duration_seconds"] is None
        assert 30 <= body["queued_seconds"] < 90

    def test_unknown_run_is_404(self, http: httpx.Client, db_session: Session, ada: User) -> None:
        assert_error(
            http.get("/api/v1/runs/999999", headers=bearer(db_session, ada)), 404, "run_not_found"
        )

    def test_permission_matrix(self, http: httpx.Client, db_session: Session) -> None:
        demo = add_project(db_session, "demo")
        run = add_run(db_session, demo, 1)
        headers = actor_headers(db_session, demo)
        statuses = {
            a: http.get(f"/api/v1/runs/{run.id}", headers=h).status_code for a, h in headers.items()
        }
        assert statuses == {
            "anonymous": 401,
            "viewer": 200,
            "developer": 200,
            "maintainer": 200,
            "admin": 200,
            "outsider": 403,
        }


class TestTasks:
    def test_active_and_queued_runs_oldest_first(
        self, http: httpx.Client, db_session: Session, ada: User, history: dict[str, Project]
    ) -> None:
        demo = history["demo"]
        add_run(db_session, demo, 4, status=Status.QUEUED, created_at=T0 + timedelta(hours=5))
        headers = bearer(db_session, ada)
        view = http.get("/api/v1/tasks", headers=headers).json()
        assert [(t["project"], t["number"]) for t in view["active"]] == [("demo", 3)]
        assert [(t["project"], t["number"]) for t in view["queued"]] == [("lib", 1), ("demo", 4)]
        active = view["active"][0]
        assert active["started_at"] is not None
        assert set(active) >= {"commit_sha", "created_by", "created_at", "started_at"}

    def test_filters_and_single_lists(
        self, http: httpx.Client, db_session: Session, ada: User, history: dict[str, Project]
    ) -> None:
        headers = bearer(db_session, ada)
        by_bob = http.get("/api/v1/tasks", headers=headers, params={"created_by": "bob"}).json()
        assert (
            [t["number"] for t in by_bob["active"]],
            [t["project"] for t in by_bob["queued"]],
        ) == (
            [],
            ["lib"],
        )
        of_demo = http.get("/api/v1/tasks", headers=headers, params={"project": "demo"}).json()
        assert (len(of_demo["active"]), of_demo["queued"]) == (1, [])
        active = http.get("/api/v1/tasks/active", headers=headers).json()
        queued = http.get("/api/v1/tasks/queued", headers=headers).json()
        assert [t["project"] for t in active] == ["demo"]
        assert [t["project"] for t in queued] == ["lib"]

    def test_anonymous_reads_public_tasks_only_when_allowed(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        assert_error(http.get("/api/v1/tasks"), 401, "not_authenticated")
