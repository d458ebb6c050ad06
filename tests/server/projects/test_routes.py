"""The projects API through real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.server.models import Membership, Project, Role, Visibility
from tests.server.conftest import add_user
from tests.server.projects.factories import actor_headers, add_project, assert_error, bearer

NEW_PROJECT = {"name": "demo", "git_url": "https://git.example.test/team/demo.git"}


class TestCreateProject:
    def test_creator_becomes_maintainer_and_fields_are_kept(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        headers = bearer(db_session, add_user(db_session, "ada"))
        response = http.post(
            "/api/v1/projects",
            headers=headers,
            json={
                **NEW_PROJECT,
                "default_branch": "trunk",
                "pipeline_path": "ci/pipeline.yml",
                "branch_filter": "main, release/*",
                "build_command": "make",
                "visibility": "public",
                "concurrency_limit": 3,
            },
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["name"] == "demo"
        assert body["owner"] == "ada"
        assert body["default_branch"] == "trunk"
        assert body["pipeline_path"] == "ci/pipeline.yml"
        assert body["branch_filter"] == "main,release/*"
        assert (body["build_command"], body["visibility"], body["concurrency_limit"]) == (
            "make",
            "public",
            3,
        )
        members = http.get("/api/v1/projects/demo/members", headers=headers).json()
        assert [(m["user"], m["role"]) for m in members] == [("ada", "maintainer")]

    def test_credentials_in_the_git_url_are_never_shown(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        headers = bearer(db_session, add_user(db_session, "ada"))
        url = "https://bot:s3cr3t-token@git.example.test/demo.git"
        response = http.post(
            "/api/v1/projects", headers=headers, json={**NEW_PROJECT, "git_url": url}
        )
        assert response.status_code == 201, response.text
        assert "s3cr3t-token" not in response.text
        assert db_session.scalars(select(Project.git_url)).one() == url

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("name", "bad name"),
            ("name", "-dash"),
            ("git_url", "--upload-pack=touch /tmp/x"),
            ("git_url", "https://host/a b.git"),
            ("git_url", "https://host/a\tb.git"),
            ("pipeline_path", "../outside.yml"),
            ("pipeline_path", "/etc/passwd"),
            ("default_branch", "-x"),
        ],
    )
    def test_bad_values_are_422_naming_the_field(
        self, http: httpx.Client, db_session: Session, field: str, value: str
    ) -> None:
        headers = bearer(db_session, add_user(db_session, "ada"))
        response = http.post(
            "/api/v1/projects", headers=headers, json={**NEW_PROJECT, field: value}
        )
        error = assert_error(response, 422, "invalid_input")
        assert error["detail"] == {"field": field}
        assert db_session.scalars(select(Project)).all() == []

    @pytest.mark.parametrize("branch_filter", ["main,,dev", "release/[x", "main, -x", "a b"])
    def test_bad_branch_filter_is_422_saying_which_glob(
        self, http: httpx.Client, db_session: Session, branch_filter: str
    ) -> None:
        headers = bearer(db_session, add_user(db_session, "ada"))
        response = http.post(
            "/api/v1/projects",
            headers=headers,
            json={**NEW_PROJECT, "branch_filter": branch_filter},
        )
        error = assert_error(response, 422, "invalid_branch_filter")
        assert "glob" in str(error["message"])
        assert isinstance(error["detail"], dict) and error["detail"]["field"] == "branch_filter"

    def test_malformed_body_is_422_with_the_error_shape(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        headers = bearer(db_session, add_user(db_session, "ada"))
        response = http.post("/api/v1/projects", headers=headers, json={"name": "demo"})
        error = assert_error(response, 422, "invalid_input")
        assert "git_url" in str(error["message"])
        not_json = http.post("/api/v1/projects", headers=headers, content=b"{oops")
        assert_error(not_json, 422, "invalid_input")

    def test_a_user_may_own_only_the_configured_number_of_projects(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        headers = bearer(db_session, add_user(db_session, "ada"))
        for name in ("one", "two"):  # the default limit is 2
            created = http.post(
                "/api/v1/projects", headers=headers, json={**NEW_PROJECT, "name": name}
            )
            assert created.status_code == 201, created.text
        third = http.post(
            "/api/v1/projects", headers=headers, json={**NEW_PROJECT, "name": "three"}
        )
        error = assert_error(third, 403, "project_limit_reached")
        assert "(2)" in str(error["message"])
        assert error["detail"] == {"owned": 2, "limit": 2}

    def test_admins_have_no_project_limit(self, http: httpx.Client, db_session: Session) -> None:
        headers = bearer(db_session, add_user(db_session, "root", is_admin=True))
        for name in ("one", "two", "three"):
            created = http.post(
                "/api/v1/projects", headers=headers, json={**NEW_PROJECT, "name": name}
            )
            assert created.status_code == 201, created.text

    def test_duplicate_name_is_409(self, http: httpx.Client, db_session: Session) -> None:
        add_project(db_session, "demo")
        headers = bearer(db_session, add_user(db_session, "ada"))
        response = http.post("/api/v1/projects", headers=headers, json=NEW_PROJECT)
        assert_error(response, 409, "project_already_exists")

    def test_anonymous_is_401_and_read_only_token_is_403(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        assert_error(http.post("/api/v1/projects", json=NEW_PROJECT), 401, "not_authenticated")
        read_only = bearer(db_session, add_user(db_session, "ada"), write=False)
        response = http.post("/api/v1/projects", headers=read_only, json=NEW_PROJECT)
        assert_error(response, 403, "token_scope_insufficient")


class TestListProjects:
    def test_lists_only_projects_the_actor_may_read(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        ada = add_user(db_session, "ada")
        add_project(db_session, "mine", members={ada: Role.VIEWER})
        add_project(db_session, "theirs")
        add_project(db_session, "open", visibility=Visibility.PUBLIC)
        names = [
            p["name"] for p in http.get("/api/v1/projects", headers=bearer(db_session, ada)).json()
        ]
        assert names == ["mine", "open"]
        admin = bearer(db_session, add_user(db_session, "root", is_admin=True))
        names = [p["name"] for p in http.get("/api/v1/projects", headers=admin).json()]
        assert names == ["mine", "open", "theirs"]

    def test_anonymous_is_asked_to_sign_in(self, http: httpx.Client, db_session: Session) -> None:
        assert_error(http.get("/api/v1/projects"), 401, "not_authenticated")


class TestReadProject:
    def test_unknown_project_is_404(self, http: httpx.Client, db_session: Session) -> None:
        headers = bearer(db_session, add_user(db_session, "root", is_admin=True))
        error = assert_error(
            http.get("/api/v1/projects/nope", headers=headers), 404, "project_not_found"
        )
        assert "nope" in str(error["message"])

    def test_permission_matrix(self, http: httpx.Client, db_session: Session) -> None:
        project = add_project(db_session, "demo")
        headers = actor_headers(db_session, project)
        statuses = {
            actor: http.get("/api/v1/projects/demo", headers=h).status_code
            for actor, h in headers.items()
        }
        assert statuses == {
            "anonymous": 401,
            "viewer": 200,
            "developer": 200,
            "maintainer": 200,
            "admin": 200,
            "outsider": 403,
        }


class TestUpdateProject:
    def test_permission_matrix_and_changes_are_kept(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        project = add_project(db_session, "demo")
        headers = actor_headers(db_session, project)
        statuses = {
            actor: http.patch(
                "/api/v1/projects/demo", headers=h, json={"branch_filter": f"main,{actor}/*"}
            ).status_code
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
        shown = http.get("/api/v1/projects/demo", headers=headers["viewer"]).json()
        assert shown["branch_filter"] == "main,admin/*"

    def test_clearing_build_command_and_bad_filter(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        ada = add_user(db_session, "ada")
        add_project(db_session, "demo", members={ada: Role.MAINTAINER})
        headers = bearer(db_session, ada)
        set_it = http.patch(
            "/api/v1/projects/demo", headers=headers, json={"build_command": "make"}
        )
        assert set_it.json()["build_command"] == "make"
        cleared = http.patch("/api/v1/projects/demo", headers=headers, json={"build_command": None})
        assert cleared.json()["build_command"] is None
        bad = http.patch("/api/v1/projects/demo", headers=headers, json={"branch_filter": "[oops"})
        assert_error(bad, 422, "invalid_branch_filter")
        unknown_field = http.patch("/api/v1/projects/demo", headers=headers, json={"owner": "x"})
        assert_error(unknown_field, 422, "invalid_input")


class TestDeleteProject:
    def test_permission_matrix(self, http: httpx.Client, db_session: Session) -> None:
        project = add_project(db_session, "demo")
        headers = actor_headers(db_session, project)
        for actor in ("anonymous", "viewer", "developer", "outsider"):
            response = http.delete("/api/v1/projects/demo", headers=headers[actor])
            assert response.status_code in (401, 403), (actor, response.text)
        assert (
            http.delete("/api/v1/projects/demo", headers=headers["maintainer"]).status_code == 204
        )
        assert_error(http.get("/api/v1/projects/demo", headers=headers["admin"]), 404)
        assert (
            db_session.scalars(select(Membership).where(Membership.project_id == project.id)).all()
            == []
        )

    def test_admin_may_delete_any_project(self, http: httpx.Client, db_session: Session) -> None:
        add_project(db_session, "demo")
        admin = bearer(db_session, add_user(db_session, "root", is_admin=True))
        assert http.delete("/api/v1/projects/demo", headers=admin).status_code == 204
        assert db_session.scalars(select(Project)).all() == []


class TestMembers:
    def test_maintainer_grants_changes_and_removes_roles(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        mia = add_user(db_session, "mia")
        bob = add_user(db_session, "bob")
        add_project(db_session, "demo", members={mia: Role.MAINTAINER})
        headers = bearer(db_session, mia)
        granted = http.put(
            "/api/v1/projects/demo/members/bob", headers=headers, json={"role": "viewer"}
        )
        assert granted.status_code == 200, granted.text
        assert granted.json()["role"] == "viewer"
        http.put("/api/v1/projects/demo/members/bob", headers=headers, json={"role": "developer"})
        bob_headers = bearer(db_session, bob)
        members = http.get("/api/v1/projects/demo/members", headers=bob_headers).json()
        assert [(m["user"], m["role"]) for m in members] == [
            ("bob", "developer"),
            ("mia", "maintainer"),
        ]
        assert http.delete("/api/v1/projects/demo/members/bob", headers=headers).status_code == 204
        assert_error(
            http.get("/api/v1/projects/demo", headers=bob_headers), 403, "permission_denied"
        )
        again = http.delete("/api/v1/projects/demo/members/bob", headers=headers)
        assert_error(again, 404, "member_not_found")

    def test_only_maintainers_manage_members(self, http: httpx.Client, db_session: Session) -> None:
        project = add_project(db_session, "demo")
        headers = actor_headers(db_session, project)
        statuses = {
            actor: http.put(
                "/api/v1/projects/demo/members/otto", headers=h, json={"role": "viewer"}
            ).status_code
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

    def test_unknown_user_and_bad_role(self, http: httpx.Client, db_session: Session) -> None:
        mia = add_user(db_session, "mia")
        add_project(db_session, "demo", members={mia: Role.MAINTAINER})
        headers = bearer(db_session, mia)
        missing = http.put(
            "/api/v1/projects/demo/members/ghost", headers=headers, json={"role": "viewer"}
        )
        assert_error(missing, 404, "user_not_found")
        bad_role = http.put(
            "/api/v1/projects/demo/members/mia", headers=headers, json={"role": "owner"}
        )
        assert_error(bad_role, 422, "invalid_input")
