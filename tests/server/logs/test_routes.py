"""The log API through real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.orm import Session

from conveyor.agent.masking import MASK
from conveyor.server.config import Settings
from conveyor.server.logs import service
from conveyor.server.models.membership import Role
from conveyor.server.models.project import Visibility
from tests.server.conftest import add_user, sign_in
from tests.server.logs.records import Records, add_member, add_run, add_secret

pytestmark = pytest.mark.usefixtures("clean_data_dir")


def _log(session: Session, settings: Settings, records: Records, data: bytes) -> None:
    service.append(session, settings, records.steps[0], 0, data, {})
    session.commit()


def _error_code(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    code: str = response.json()["error"]["code"]
    return code


class TestReadLogLines:
    def test_range_returns_text_lines_and_the_total(
        self, http: httpx.Client, db_session: Session, server_settings: Settings
    ) -> None:
        records = add_run(db_session)
        _log(db_session, server_settings, records, b"zero\none\ntwo\nthr\xffee\nfour\n")
        add_user(db_session, "ada", is_admin=True)
        sign_in(http, "ada")
        response = http.get(f"/api/v1/steps/{records.steps[0].id}/log?start=1&end=4")
        assert response.status_code == 200, response.text
        assert response.json() == {"start": 1, "lines": ["one", "two", "thr\ufffdee"], "total": 5}

    def test_secrets_of_the_project_are_masked_when_read(
        self, http: httpx.Client, db_session: Session, server_settings: Settings
    ) -> None:
        records = add_run(db_session)
        add_secret(db_session, server_settings, records.project, "TOKEN", "tok-123456")
        _log(db_session, server_settings, records, b"using tok-123456 now\n")
        add_user(db_session, "ada", is_admin=True)
        sign_in(http, "ada")
        response = http.get(f"/api/v1/steps/{records.steps[0].id}/log")
        assert response.json()["lines"] == [f"using {MASK.decode()} now"]

    def test_inverted_range_is_422_with_the_error_shape(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        records = add_run(db_session)
        add_user(db_session, "ada", is_admin=True)
        sign_in(http, "ada")
        response = http.get(f"/api/v1/steps/{records.steps[0].id}/log?start=5&end=1")
        assert _error_code(response, 422) == "invalid_log_range"

    def test_unknown_step_is_404(self, http: httpx.Client, db_session: Session) -> None:
        add_user(db_session, "ada", is_admin=True)
        sign_in(http, "ada")
        assert _error_code(http.get("/api/v1/steps/999999/log"), 404) == "step_not_found"


class TestLogPermissions:
    def test_anonymous_is_401(self, http: httpx.Client, db_session: Session) -> None:
        records = add_run(db_session)
        response = http.get(f"/api/v1/steps/{records.steps[0].id}/log")
        assert _error_code(response, 401) == "not_authenticated"

    def test_viewer_of_the_project_may_read(self, http: httpx.Client, db_session: Session) -> None:
        records = add_run(db_session)
        add_member(db_session, add_user(db_session, "vic"), records.project, Role.VIEWER)
        sign_in(http, "vic")
        assert http.get(f"/api/v1/steps/{records.steps[0].id}/log").status_code == 200
        assert http.get(f"/api/v1/steps/{records.steps[0].id}/log/raw").status_code == 200

    def test_maintainer_of_another_project_is_403(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        records = add_run(db_session)
        other = add_run(db_session, "other")
        add_member(db_session, add_user(db_session, "mo"), other.project, Role.MAINTAINER)
        sign_in(http, "mo")
        response = http.get(f"/api/v1/steps/{records.steps[0].id}/log")
        assert _error_code(response, 403) == "permission_denied"
        raw = http.get(f"/api/v1/steps/{records.steps[0].id}/log/raw")
        assert _error_code(raw, 403) == "permission_denied"

    def test_signed_in_user_reads_a_public_project(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        records = add_run(db_session, visibility=Visibility.PUBLIC)
        add_user(db_session, "pat")
        sign_in(http, "pat")
        assert http.get(f"/api/v1/steps/{records.steps[0].id}/log").status_code == 200


class TestDownloadRawLog:
    def test_whole_log_is_an_attachment_with_its_length_and_masked(
        self, http: httpx.Client, db_session: Session, server_settings: Settings
    ) -> None:
        records = add_run(db_session)
        add_secret(db_session, server_settings, records.project, "PW", "pass-word-1")
        data = b"".join(f"{i} pass-word-1 \xfe\n".encode("latin-1") for i in range(50_000))
        data += b"no newline at the end"
        _log(db_session, server_settings, records, data)
        add_user(db_session, "ada", is_admin=True)
        sign_in(http, "ada")
        response = http.get(f"/api/v1/steps/{records.steps[0].id}/log/raw")
        assert response.status_code == 200
        expected = data.replace(b"pass-word-1", MASK)
        assert response.content == expected
        assert response.headers["content-length"] == str(len(expected))
        assert response.headers["content-type"].startswith("text/plain")
        assert (
            response.headers["content-disposition"] == 'attachment; filename="demo-7-build-0.log"'
        )

    def test_step_without_log_downloads_empty(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        records = add_run(db_session)
        add_user(db_session, "ada", is_admin=True)
        sign_in(http, "ada")
        response = http.get(f"/api/v1/steps/{records.steps[1].id}/log/raw")
        assert response.status_code == 200
        assert response.content == b""
        assert response.headers["content-length"] == "0"
