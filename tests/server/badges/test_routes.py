"""GET /badge/{project}.svg through the real server, on both databases."""

from __future__ import annotations

import httpx
from sqlalchemy.orm import Session

from conveyor.protocol.status import Status
from conveyor.server.models.project import Visibility
from tests.server.projects.factories import add_project
from tests.server.runs.factories import add_run


class TestBadge:
    def test_states_follow_the_last_finished_run_of_the_branch(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        project = add_project(db_session, "pub", visibility=Visibility.PUBLIC)
        assert "unknown" in http.get("/badge/pub.svg").text
        add_run(db_session, project, 1, status=Status.SUCCESS)
        response = http.get("/badge/pub.svg?branch=main")
        assert response.status_code == 200 and ">passing<" in response.text
        assert response.headers["content-type"].startswith("image/svg+xml")
        assert response.headers["cache-control"] == "no-cache"
        add_run(db_session, project, 2, status=Status.FAILURE)
        assert ">failing<" in http.get("/badge/pub.svg").text
        add_run(db_session, project, 3, status=Status.RUNNING)
        assert ">running<" in http.get("/badge/pub.svg").text
        assert ">unknown<" in http.get("/badge/pub.svg?branch=other").text

    def test_etag_answers_304_when_unchanged(self, http: httpx.Client, db_session: Session) -> None:
        project = add_project(db_session, "pub", visibility=Visibility.PUBLIC)
        add_run(db_session, project, 1, status=Status.SUCCESS)
        first = http.get("/badge/pub.svg")
        again = http.get("/badge/pub.svg", headers={"If-None-Match": first.headers["etag"]})
        assert again.status_code == 304

    def test_private_and_missing_projects_both_answer_unknown_to_anonymous(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        project = add_project(db_session, "secret")
        add_run(db_session, project, 1, status=Status.FAILURE)
        private = http.get("/badge/secret.svg")
        missing = http.get("/badge/nothing-here.svg")
        assert private.status_code == missing.status_code == 200
        assert ">unknown<" in private.text and private.text == missing.text
