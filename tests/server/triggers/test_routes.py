"""The polling and schedules API through a real server, on both databases: who may
read and change what, and how bad input is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.server.config import Settings
from conveyor.server.models import Role, Schedule
from conveyor.server.models.project import Project
from conveyor.server.users import service as users_service
from tests.server.conftest import add_user
from tests.server.projects.factories import actor_headers, add_project, assert_error, bearer

POLLING = "/api/v1/projects/demo/polling"
SCHEDULES = "/api/v1/projects/demo/schedules"


def _parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@pytest.fixture(scope="module")
def server_settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The module's server, with duties that pass once at start (on an empty database)
    and then sleep: what these tests read is what the API wrote, not what a poller or
    scheduler changed meanwhile (tests/server/triggers/test_tasks.py has the duties)."""
    return Settings(
        data_dir=tmp_path_factory.mktemp("data"),
        database_url=database_url,
        agents=0,
        triggers_tick_seconds=3600,
    )


@pytest.fixture
def demo(db_session: Session) -> Project:
    return add_project(db_session, "demo")


@pytest.fixture
def maintainer(db_session: Session, demo: Project) -> dict[str, str]:
    mia = add_user(db_session, "mia")
    add_project(db_session, "mia-own", members={mia: Role.MAINTAINER})
    users_service.set_membership(db_session, mia, demo, Role.MAINTAINER)
    db_session.commit()
    return bearer(db_session, mia)


def _problem_locations(response: httpx.Response) -> list[str]:
    detail = assert_error(response, 422, "invalid_input")["detail"]
    assert isinstance(detail, list)
    return [".".join(problem["location"]) for problem in detail]


class TestGetPolling:
    def test_polling_is_off_until_set(
        self, http: httpx.Client, demo: Project, maintainer: dict[str, str]
    ) -> None:
        response = http.get(POLLING, headers=maintainer)
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["interval_seconds"], body["heads"], body["next_poll_at"]) == (None, None, None)

    def test_permission_matrix(
        self, http: httpx.Client, db_session: Session, demo: Project
    ) -> None:
        headers = actor_headers(db_session, demo)
        statuses = {actor: http.get(POLLING, headers=h).status_code for actor, h in headers.items()}
        assert statuses == {
            "anonymous": 401,
            "viewer": 200,
            "developer": 200,
            "maintainer": 200,
            "admin": 200,
            "outsider": 403,
        }

    def test_unknown_project_is_404(self, http: httpx.Client, maintainer: dict[str, str]) -> None:
        response = http.get("/api/v1/projects/nothing/polling", headers=maintainer)
        assert_error(response, 404, "project_not_found")


class TestPutPolling:
    def test_maintainer_sets_interval_and_viewer_reads_it(
        self, http: httpx.Client, db_session: Session, demo: Project, maintainer: dict[str, str]
    ) -> None:
        before = datetime.now(UTC) - timedelta(seconds=1)
        response = http.put(POLLING, headers=maintainer, json={"interval_seconds": 300})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["interval_seconds"] == 300
        # A new interval polls at once.
        assert before <= _parse_time(body["next_poll_at"]) <= datetime.now(UTC)
        vera = add_user(db_session, "vera")
        users_service.set_membership(db_session, vera, demo, Role.VIEWER)
        db_session.commit()
        seen = http.get(POLLING, headers=bearer(db_session, vera)).json()
        assert seen["interval_seconds"] == 300

    def test_null_interval_switches_polling_off(
        self, http: httpx.Client, maintainer: dict[str, str]
    ) -> None:
        http.put(POLLING, headers=maintainer, json={"interval_seconds": 60})
        response = http.put(POLLING, headers=maintainer, json={"interval_seconds": None})
        assert response.status_code == 200, response.text
        assert (response.json()["interval_seconds"], response.json()["next_poll_at"]) == (
            None,
            None,
        )

    @pytest.mark.parametrize(
        ("body", "location"),
        [
            ({"interval_seconds": 0}, "body.interval_seconds"),
            ({"interval_seconds": "often"}, "body.interval_seconds"),
            ({}, "body.interval_seconds"),
            ({"interval_seconds": 60, "heads": {}}, "body.heads"),
        ],
    )
    def test_bad_body_is_422_naming_the_field(
        self,
        http: httpx.Client,
        maintainer: dict[str, str],
        body: dict[str, object],
        location: str,
    ) -> None:
        response = http.put(POLLING, headers=maintainer, json=body)
        assert location in _problem_locations(response)

    def test_permission_matrix(
        self, http: httpx.Client, db_session: Session, demo: Project
    ) -> None:
        headers = actor_headers(db_session, demo)
        statuses = {
            actor: http.put(POLLING, headers=h, json={"interval_seconds": 60}).status_code
            for actor, h in headers.items()
        }
        assert statuses == {
            "anonymous": 401,
            "viewer": 403,
            "developer": 403,
            "maintainer": 200,
            "admin": 200,
            "outsider": 403,
        }

    def test_read_only_token_cannot_set_polling(
        self, http: httpx.Client, db_session: Session, demo: Project
    ) -> None:
        mia = add_user(db_session, "mia")
        users_service.set_membership(db_session, mia, demo, Role.MAINTAINER)
        db_session.commit()
        response = http.put(
            POLLING, headers=bearer(db_session, mia, write=False), json={"interval_seconds": 60}
        )
        assert_error(response, 403, "token_scope_insufficient")


class TestScheduleCrud:
    def test_create_read_update_delete(
        self, http: httpx.Client, db_session: Session, maintainer: dict[str, str]
    ) -> None:
        created = http.post(
            SCHEDULES,
            headers=maintainer,
            json={
                "cron": "0  3 * * 1-5",
                "branch": "main",
                "variables": {"NIGHTLY": "1"},
                "time_zone": "Europe/Berlin",
            },
        )
        assert created.status_code == 201, created.text
        schedule = created.json()
        assert schedule["cron"] == "0 3 * * 1-5"  # whitespace is normalised
        assert (schedule["branch"], schedule["variables"], schedule["time_zone"]) == (
            "main",
            {"NIGHTLY": "1"},
            "Europe/Berlin",
        )
        due = _parse_time(schedule["next_due_at"])
        assert due > datetime.now(UTC) and due.minute == 0
        assert due.hour in (1, 2)  # 03:00 in Berlin is 01:00 or 02:00 UTC
        url = f"{SCHEDULES}/{schedule['id']}"

        assert http.get(url, headers=maintainer).json() == schedule
        assert [s["id"] for s in http.get(SCHEDULES, headers=maintainer).json()] == [schedule["id"]]

        changed = http.patch(
            url, headers=maintainer, json={"cron": "30 4 * * *", "time_zone": "UTC"}
        )
        assert changed.status_code == 200, changed.text
        next_due = _parse_time(changed.json()["next_due_at"])
        assert (next_due.hour, next_due.minute) == (4, 30)
        assert changed.json()["variables"] == {"NIGHTLY": "1"}  # untouched fields stay

        paused = http.patch(url, headers=maintainer, json={"enabled": False})
        assert (paused.json()["enabled"], paused.json()["next_due_at"]) == (False, None)
        resumed = http.patch(url, headers=maintainer, json={"enabled": True, "branch": None})
        assert resumed.json()["next_due_at"] is not None and resumed.json()["branch"] is None

        deleted = http.delete(url, headers=maintainer)
        assert deleted.status_code == 204
        assert_error(http.get(url, headers=maintainer), 404, "schedule_not_found")
        assert db_session.scalars(select(Schedule)).all() == []

    def test_time_zone_defaults_to_the_server_zone(
        self, http: httpx.Client, maintainer: dict[str, str]
    ) -> None:
        created = http.post(SCHEDULES, headers=maintainer, json={"cron": "*/15 * * * *"})
        assert created.status_code == 201, created.text
        assert created.json()["time_zone"] == "UTC"
        assert created.json()["enabled"] is True

    def test_schedule_of_another_project_is_404(
        self, http: httpx.Client, db_session: Session, maintainer: dict[str, str]
    ) -> None:
        other = http.post(
            "/api/v1/projects/mia-own/schedules", headers=maintainer, json={"cron": "0 * * * *"}
        ).json()
        response = http.get(f"{SCHEDULES}/{other['id']}", headers=maintainer)
        assert_error(response, 404, "schedule_not_found")
        response = http.delete(f"{SCHEDULES}/{other['id']}", headers=maintainer)
        assert_error(response, 404, "schedule_not_found")
        assert len(db_session.scalars(select(Schedule)).all()) == 1


class TestScheduleInput:
    @pytest.mark.parametrize(
        ("body", "location"),
        [
            ({"cron": "61 * * * *"}, "body.cron"),
            ({"cron": "every day"}, "body.cron"),
            ({"cron": ""}, "body.cron"),
            ({"cron": "0 3 * * *", "time_zone": "Mars/Olympus"}, "body.time_zone"),
            ({"cron": "0 3 * * *", "variables": {"1BAD": "x"}}, "body.variables"),
            ({"cron": "0 3 * * *", "variables": {"A": 1}}, "body.variables.A"),
            ({"cron": "0 3 * * *", "when": "now"}, "body.when"),
            ({"branch": "main"}, "body.cron"),
        ],
    )
    def test_bad_create_is_422_naming_the_field(
        self,
        http: httpx.Client,
        maintainer: dict[str, str],
        body: dict[str, object],
        location: str,
    ) -> None:
        response = http.post(SCHEDULES, headers=maintainer, json=body)
        assert location in _problem_locations(response)
        field = location.split(".")[1]
        assert field in str(assert_error(response, 422)["message"])

    def test_bad_branch_name_is_422(self, http: httpx.Client, maintainer: dict[str, str]) -> None:
        response = http.post(
            SCHEDULES, headers=maintainer, json={"cron": "0 3 * * *", "branch": "a..b"}
        )
        error = assert_error(response, 422, "invalid_input")
        assert error["detail"] == {"field": "branch"}

    def test_bad_update_is_422_and_changes_nothing(
        self, http: httpx.Client, maintainer: dict[str, str]
    ) -> None:
        schedule = http.post(SCHEDULES, headers=maintainer, json={"cron": "0 3 * * *"}).json()
        url = f"{SCHEDULES}/{schedule['id']}"
        assert "body.cron" in _problem_locations(
            http.patch(url, headers=maintainer, json={"cron": "0 25 * * *"})
        )
        assert "body.time_zone" in _problem_locations(
            http.patch(url, headers=maintainer, json={"time_zone": "Nowhere/Town"})
        )
        assert http.get(url, headers=maintainer).json() == schedule


class TestSchedulePermissions:
    def test_viewers_read_and_only_maintainers_change(
        self, http: httpx.Client, db_session: Session, demo: Project
    ) -> None:
        headers = actor_headers(db_session, demo)
        admin = headers["admin"]
        schedule = http.post(SCHEDULES, headers=admin, json={"cron": "0 3 * * *"}).json()
        url = f"{SCHEDULES}/{schedule['id']}"
        outcomes: dict[str, tuple[int, ...]] = {}
        for actor, h in headers.items():
            outcomes[actor] = (
                http.get(SCHEDULES, headers=h).status_code,
                http.get(url, headers=h).status_code,
                http.post(SCHEDULES, headers=h, json={"cron": "0 4 * * *"}).status_code,
                http.patch(url, headers=h, json={"cron": "0 5 * * *"}).status_code,
            )
        assert outcomes == {
            "anonymous": (401, 401, 401, 401),
            "viewer": (200, 200, 403, 403),
            "developer": (200, 200, 403, 403),
            "maintainer": (200, 200, 201, 200),
            "admin": (200, 200, 201, 200),
            "outsider": (403, 403, 403, 403),
        }
        deletes = {
            actor: http.delete(url, headers=h).status_code
            for actor, h in headers.items()
            if actor != "admin"
        }
        assert deletes == {
            "anonymous": 401,
            "viewer": 403,
            "developer": 403,
            "outsider": 403,
            "maintainer": 204,
        }
