"""Triggering runs through real HTTP against real git repositories, on both databases."""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.logstore import read_lines
from conveyor.protocol.status import Status
from conveyor.server.config import Settings
from conveyor.server.logs.paths import step_log_path
from conveyor.server.models import Job, Project, Role, Run, Step
from tests.fixtures.gitrepos import Repo
from tests.server.conftest import add_user, sign_in
from tests.server.projects.factories import actor_headers, add_project, assert_error, bearer
from tests.server.runs.factories import PIPELINE

MATRIX_PIPELINE = (
    "matrix: {PY: ['3.11', '3.12']}\n"
    "steps:\n  - name: test\n    commands: [echo $PY]\n    timeout: 5m\n"
    "timeout: 1h\n"
)


@pytest.fixture
def repo(make_repo: Callable[..., Repo]) -> Repo:
    return make_repo({".conveyor.yml": PIPELINE})


@pytest.fixture
def developer(db_session: Session, repo: Repo) -> dict[str, str]:
    """Headers of a developer of project `demo`, whose repository is `repo`."""
    dev = add_user(db_session, "dev")
    add_project(db_session, "demo", repo.url, members={dev: Role.DEVELOPER})
    return bearer(db_session, dev)


def _runs(session: Session) -> list[Run]:
    session.expire_all()
    return list(session.scalars(select(Run).order_by(Run.number)))


class TestTriggerRun:
    def test_default_branch_run_is_queued_with_commit_jobs_and_steps(
        self, http: httpx.Client, db_session: Session, repo: Repo, developer: dict[str, str]
    ) -> None:
        response = http.post("/api/v1/projects/demo/runs", headers=developer, json={})
        assert response.status_code == 201, response.text
        run = response.json()
        assert (run["project"], run["number"], run["event"], run["status"]) == (
            "demo",
            1,
            "api",
            "queued",
        )
        assert run["branch"] == "main" and run["tag"] is None
        assert run["commit_sha"] == repo.head()
        assert run["commit_message"] == "initial commit"
        assert run["commit_author"] == "Ada Tester <ada@example.test>"
        assert run["created_by"] == "dev"
        assert [(j["name"], j["status"]) for j in run["jobs"]] == [("build", "queued")]
        assert [(s["index"], s["name"], s["status"]) for s in run["jobs"][0]["steps"]] == [
            (0, "build", "queued"),
            (1, "test", "queued"),
        ]
        job = db_session.scalars(select(Job)).one()
        assert job.plan["steps"][0]["commands"] == ["echo hi"]
        assert (job.max_attempts, job.priority, job.status) == (2, 0, Status.QUEUED)

    def test_branch_tag_and_sha_each_resolve_their_commit(
        self, http: httpx.Client, db_session: Session, repo: Repo, developer: dict[str, str]
    ) -> None:
        first = repo.head()
        repo.git("tag", "v1.0")
        repo.git("checkout", "-q", "-b", "feature/x")
        repo.write("file.txt", "x")
        feature = repo.commit("feature work")
        url = "/api/v1/projects/demo/runs"
        by_branch = http.post(url, headers=developer, json={"branch": "feature/x"}).json()
        assert (by_branch["branch"], by_branch["commit_sha"]) == ("feature/x", feature)
        assert by_branch["commit_message"] == "feature work"
        by_tag = http.post(url, headers=developer, json={"tag": "v1.0"}).json()
        assert (by_tag["tag"], by_tag["branch"], by_tag["commit_sha"]) == ("v1.0", None, first)
        by_sha = http.post(url, headers=developer, json={"sha": first[:12]}).json()
        assert by_sha["commit_sha"] == first
        assert [r.number for r in _runs(db_session)] == [1, 2, 3]

    def test_matrix_makes_one_job_per_combination_with_plan_timeout_and_priority(
        self,
        http: httpx.Client,
        db_session: Session,
        make_repo: Callable[..., Repo],
        developer: dict[str, str],
    ) -> None:
        matrix_repo = make_repo({".conveyor.yml": MATRIX_PIPELINE})
        project = db_session.scalars(select(Project)).one()
        project.git_url = matrix_repo.url
        db_session.commit()
        response = http.post(
            "/api/v1/projects/demo/runs",
            headers=developer,
            json={"priority": 5, "variables": {"GREETING": "hello"}},
        )
        assert response.status_code == 201, response.text
        assert response.json()["variables"] == {"GREETING": "hello"}
        jobs = list(db_session.scalars(select(Job).order_by(Job.id)))
        assert [(j.name, j.matrix, j.priority, j.timeout_seconds) for j in jobs] == [
            ("PY=3.11", {"PY": "3.11"}, 5, 3600.0),
            ("PY=3.12", {"PY": "3.12"}, 5, 3600.0),
        ]

    @pytest.mark.parametrize(
        "body",
        [
            {"branch": "main", "tag": "v1"},
            {"branch": "main", "sha": "abcdef0"},
            {"sha": "not-a-sha"},
            {"variables": {"1BAD": "x"}},
            {"variables": "nope"},
            {"unknown": 1},
        ],
    )
    def test_malformed_body_is_422_and_records_nothing(
        self, http: httpx.Client, db_session: Session, developer: dict[str, str], body: object
    ) -> None:
        response = http.post("/api/v1/projects/demo/runs", headers=developer, json=body)
        assert_error(response, 422, "invalid_input")
        assert _runs(db_session) == []

    def test_unknown_ref_is_422_listing_the_branches_and_records_nothing(
        self, http: httpx.Client, db_session: Session, repo: Repo, developer: dict[str, str]
    ) -> None:
        repo.git("branch", "develop")
        response = http.post(
            "/api/v1/projects/demo/runs", headers=developer, json={"branch": "nope"}
        )
        error = assert_error(response, 422, "ref_not_found")
        assert "develop, main" in str(error["message"])
        assert _runs(db_session) == []

    def test_unreachable_repository_is_422(
        self, http: httpx.Client, db_session: Session, developer: dict[str, str], tmp_path: object
    ) -> None:
        project = db_session.scalars(select(Project)).one()
        project.git_url = "file:///nonexistent/repository.git"
        db_session.commit()
        response = http.post("/api/v1/projects/demo/runs", headers=developer, json={})
        error = assert_error(response, 422, "repository_unreachable")
        assert "demo" in str(error["message"])
        assert _runs(db_session) == []

    def test_branch_outside_the_filter_is_422_naming_the_filter(
        self, http: httpx.Client, db_session: Session, repo: Repo, developer: dict[str, str]
    ) -> None:
        repo.git("branch", "feature/x")
        project = db_session.scalars(select(Project)).one()
        project.branch_filter = "main,release/*"
        db_session.commit()
        response = http.post(
            "/api/v1/projects/demo/runs", headers=developer, json={"branch": "feature/x"}
        )
        error = assert_error(response, 422, "branch_not_allowed")
        assert "'main,release/*'" in str(error["message"])
        assert _runs(db_session) == []
        inside = http.post("/api/v1/projects/demo/runs", headers=developer, json={"branch": "main"})
        assert inside.status_code == 201, inside.text

    def test_unreadable_pipeline_records_an_error_run_whose_log_says_where(
        self,
        http: httpx.Client,
        db_session: Session,
        repo: Repo,
        developer: dict[str, str],
        server_settings: Settings,
    ) -> None:
        repo.write(".conveyor.yml", "steps:\n  - name: build\n    timeout: soon\n")
        repo.commit("break the pipeline")
        response = http.post("/api/v1/projects/demo/runs", headers=developer, json={})
        assert response.status_code == 201, response.text
        run = response.json()
        assert run["status"] == "error"
        assert ".conveyor.yml:3:14" in run["error_message"]
        assert [(j["name"], j["status"]) for j in run["jobs"]] == [("pipeline", "error")]
        step = run["jobs"][0]["steps"][0]
        assert (step["name"], step["status"]) == ("load", "error")
        job = db_session.scalars(select(Job)).one()
        log = step_log_path(server_settings.data_dir, run["id"], job.id, 0)
        text = b"".join(read_lines(log, 0)).decode()
        assert ".conveyor.yml:3:14: steps[0].timeout" in text
        assert "duration" in text
        assert (step["log_lines"], step["log_bytes"]) == (text.count("\n"), len(text.encode()))

    def test_pipeline_whose_when_does_not_match_records_a_skipped_run(
        self,
        http: httpx.Client,
        db_session: Session,
        repo: Repo,
        developer: dict[str, str],
    ) -> None:
        repo.write(".conveyor.yml", "when: {branch: release/*}\n" + PIPELINE)
        repo.commit("only releases")
        response = http.post("/api/v1/projects/demo/runs", headers=developer, json={})
        assert response.status_code == 201, response.text
        run = response.json()
        assert (run["status"], run["jobs"]) == ("skipped", [])
        assert "main" in run["error_message"] and "release/*" in run["error_message"]

    def test_concurrent_triggers_get_distinct_numbers(
        self, http: httpx.Client, db_session: Session, developer: dict[str, str]
    ) -> None:
        http.post("/api/v1/projects/demo/runs", headers=developer, json={})  # mirror exists
        # A session cookie, not the token: a token's last-use update is a write of its
        # own, which is not what this test is about.
        sign_in(http, "dev")
        statuses: list[int] = []

        def trigger() -> None:
            with httpx.Client(base_url=http.base_url, cookies=http.cookies, timeout=30) as client:
                response = client.post("/api/v1/projects/demo/runs", json={})
                statuses.append(response.status_code)

        threads = [threading.Thread(target=trigger) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses == [201] * 8
        assert [run.number for run in _runs(db_session)] == list(range(1, 10))
        assert len(db_session.scalars(select(Step)).all()) == 9 * 2

    def test_unknown_project_is_404(self, http: httpx.Client, db_session: Session) -> None:
        headers = bearer(db_session, add_user(db_session, "root", is_admin=True))
        response = http.post("/api/v1/projects/nope/runs", headers=headers, json={})
        assert_error(response, 404, "project_not_found")

    def test_permission_matrix(self, http: httpx.Client, db_session: Session, repo: Repo) -> None:
        project = add_project(db_session, "demo", repo.url)
        headers = actor_headers(db_session, project)
        statuses = {
            actor: http.post("/api/v1/projects/demo/runs", headers=h, json={}).status_code
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
        assert [run.actor_name for run in _runs(db_session)] == ["dev", "mia", "root"]
