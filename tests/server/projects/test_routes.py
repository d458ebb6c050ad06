"""The projects API through real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.server.config import Settings
from conveyor.server.models import Membership, Project, Role, User, Visibility
from tests.fixtures.gitrepos import Repo
from tests.server.conftest import add_user
from tests.server.logs.conftest import clean_data_dir
from tests.server.projects.disk import store_files
from tests.server.projects.factories import actor_headers, add_project, assert_error, bearer
from tests.server.runs.factories import PIPELINE

__all__ = ["clean_data_dir"]

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


def _members(session: Session, project: str) -> list[tuple[str, Role]]:
    session.commit()  # a new transaction sees what the server committed
    rows = session.execute(
        select(User.name, Membership.role)
        .join(Membership, Membership.user_id == User.id)
        .join(Project, Project.id == Membership.project_id)
        .where(Project.name == project)
        .order_by(User.name)
    )
    return [(name, role) for name, role in rows]


class TestLastMaintainer:
    def test_removing_the_last_maintainer_is_409_and_changes_nothing(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        mia, bob = add_user(db_session, "mia"), add_user(db_session, "bob")
        add_project(db_session, "demo", members={mia: Role.MAINTAINER, bob: Role.DEVELOPER})
        before = _members(db_session, "demo")
        for actor in (mia, add_user(db_session, "root", is_admin=True)):
            refused = http.delete(
                "/api/v1/projects/demo/members/mia", headers=bearer(db_session, actor)
            )
            error = assert_error(refused, 409, "last_maintainer")
            assert str(error["message"]).startswith(
                "mia is the last maintainer of project demo; make someone else maintainer first"
            )
            assert error["detail"] == {"project": "demo", "user": "mia"}
        assert _members(db_session, "demo") == before

    @pytest.mark.parametrize("role", ["developer", "viewer"])
    def test_demoting_the_last_maintainer_is_409_and_changes_nothing(
        self, http: httpx.Client, db_session: Session, role: str
    ) -> None:
        mia = add_user(db_session, "mia")
        add_project(db_session, "demo", members={mia: Role.MAINTAINER})
        before = _members(db_session, "demo")
        refused = http.put(
            "/api/v1/projects/demo/members/mia",
            headers=bearer(db_session, mia),
            json={"role": role},
        )
        error = assert_error(refused, 409, "last_maintainer")
        assert "mia is the last maintainer of project demo" in str(error["message"])
        assert _members(db_session, "demo") == before

    def test_a_maintainer_may_step_down_while_another_remains(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        mia, bob = add_user(db_session, "mia"), add_user(db_session, "bob")
        add_project(db_session, "demo", members={mia: Role.MAINTAINER, bob: Role.MAINTAINER})
        headers = bearer(db_session, mia)
        demoted = http.put(
            "/api/v1/projects/demo/members/bob", headers=headers, json={"role": "viewer"}
        )
        assert demoted.status_code == 200, demoted.text
        assert_error(http.delete("/api/v1/projects/demo/members/mia", headers=headers), 409)
        promoted = http.put(
            "/api/v1/projects/demo/members/bob", headers=headers, json={"role": "maintainer"}
        )
        assert promoted.status_code == 200, promoted.text
        assert http.delete("/api/v1/projects/demo/members/mia", headers=headers).status_code == 204
        assert _members(db_session, "demo") == [("bob", Role.MAINTAINER)]

    def test_administrators_and_deactivated_users_do_not_count_as_maintainers(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        mia, root = add_user(db_session, "mia"), add_user(db_session, "root", is_admin=True)
        gone = add_user(db_session, "gone")
        add_project(
            db_session,
            "demo",
            members={mia: Role.MAINTAINER, root: Role.MAINTAINER, gone: Role.MAINTAINER},
        )
        gone.is_active = False
        db_session.commit()
        admin = bearer(db_session, root)
        refused = http.delete("/api/v1/projects/demo/members/mia", headers=admin)
        assert_error(refused, 409, "last_maintainer")
        # Removing those who do not count changes no one's ability to manage it.
        for name in ("root", "gone"):
            removed = http.delete(f"/api/v1/projects/demo/members/{name}", headers=admin)
            assert removed.status_code == 204, removed.text
        assert _members(db_session, "demo") == [("mia", Role.MAINTAINER)]

    def test_two_maintainers_removing_each_other_at_once_leave_one(
        self, http: httpx.Client, db_session: Session
    ) -> None:
        mia, bob = add_user(db_session, "mia"), add_user(db_session, "bob")
        add_project(db_session, "demo", members={mia: Role.MAINTAINER, bob: Role.MAINTAINER})
        requests = {"bob": bearer(db_session, mia), "mia": bearer(db_session, bob)}
        start = threading.Barrier(len(requests))
        statuses: dict[str, int] = {}

        def remove(target: str) -> None:
            start.wait(timeout=10)
            response = http.delete(
                f"/api/v1/projects/demo/members/{target}", headers=requests[target]
            )
            statuses[target] = response.status_code

        threads = [threading.Thread(target=remove, args=(target,)) for target in requests]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        # The one served second finds its own maintainer role gone (403), or, when its
        # actor was read before the first committed, the target the last one (409).
        assert sorted(statuses.values()) in ([204, 403], [204, 409]), statuses
        (survivor,) = _members(db_session, "demo")
        assert survivor[1] is Role.MAINTAINER


@pytest.fixture
def maintainer(db_session: Session) -> User:
    return add_user(db_session, "mia")


@pytest.fixture
def built_project(
    db_session: Session, make_repo: Callable[..., Repo], maintainer: User
) -> Callable[[str], Project]:
    """A project of `maintainer` building a real repository of its own."""

    def make(name: str, git_url: str | None = None) -> Project:
        url = git_url or make_repo({".conveyor.yml": PIPELINE}).url
        return add_project(db_session, name, url, members={maintainer: Role.MAINTAINER})

    return make


@pytest.mark.usefixtures("clean_data_dir")
class TestDeleteProjectFiles:
    def test_logs_artifacts_uploads_and_mirror_go_and_other_projects_keep_theirs(
        self,
        http: httpx.Client,
        db_session: Session,
        server_settings: Settings,
        maintainer: User,
        built_project: Callable[..., Project],
    ) -> None:
        headers = bearer(db_session, maintainer)
        demo = store_files(http, db_session, server_settings, built_project("demo"), headers)
        other = store_files(http, db_session, server_settings, built_project("other"), headers)
        assert http.delete("/api/v1/projects/demo", headers=headers).status_code == 204
        assert demo.existing() == []
        assert other.existing() == other.paths()
        assert (
            http.get(f"/api/v1/runs/{other.log_directory.name}/artifacts", headers=headers)
        ).status_code == 200

    def test_mirror_shared_by_url_stays_until_its_last_project_goes(
        self,
        http: httpx.Client,
        db_session: Session,
        server_settings: Settings,
        maintainer: User,
        built_project: Callable[..., Project],
    ) -> None:
        headers = bearer(db_session, maintainer)
        demo_project = built_project("demo")
        demo = store_files(http, db_session, server_settings, demo_project, headers)
        twin = built_project("twin", git_url=demo_project.git_url)
        twin_files = store_files(http, db_session, server_settings, twin, headers)
        assert twin_files.mirror == demo.mirror
        assert http.delete("/api/v1/projects/demo", headers=headers).status_code == 204
        assert demo.mirror.is_dir(), "twin still builds this repository"
        assert demo.agent_mirror.is_dir() and twin_files.agent_mirror == demo.agent_mirror
        assert not demo.log_directory.exists() and twin_files.log_directory.exists()
        assert http.delete("/api/v1/projects/twin", headers=headers).status_code == 204
        assert not demo.mirror.exists()
        assert not demo.agent_mirror.exists()

    def test_files_already_gone_do_not_fail_the_deletion(
        self,
        http: httpx.Client,
        db_session: Session,
        server_settings: Settings,
        maintainer: User,
        built_project: Callable[..., Project],
    ) -> None:
        headers = bearer(db_session, maintainer)
        demo = store_files(http, db_session, server_settings, built_project("demo"), headers)
        demo.step_log.unlink()
        demo.upload_part.unlink()
        shutil.rmtree(demo.artifact_directory)
        assert http.delete("/api/v1/projects/demo", headers=headers).status_code == 204
        assert demo.existing() == []

    def test_links_are_removed_as_links_and_what_they_point_to_stays(
        self,
        http: httpx.Client,
        db_session: Session,
        server_settings: Settings,
        maintainer: User,
        built_project: Callable[..., Project],
        tmp_path: Path,
    ) -> None:
        headers = bearer(db_session, maintainer)
        demo = store_files(http, db_session, server_settings, built_project("demo"), headers)
        outside = tmp_path / "outside"
        (outside / "kept").mkdir(parents=True)
        (outside / "kept" / "precious.txt").write_text("not conveyor's")
        # Where the project's artifacts are, a link out of the data directory; inside
        # its run's log directory, links to a file and a directory outside.
        shutil.rmtree(demo.artifact_directory)
        os.symlink(outside / "kept", demo.artifact_directory)
        os.symlink(outside / "kept" / "precious.txt", demo.log_directory / "file-link")
        os.symlink(outside / "kept", demo.log_directory / "directory-link")
        assert http.delete("/api/v1/projects/demo", headers=headers).status_code == 204
        assert not os.path.lexists(demo.artifact_directory)
        assert not os.path.lexists(demo.log_directory)
        assert (outside / "kept" / "precious.txt").read_text() == "not conveyor's"

    def test_refused_deletion_removes_nothing(
        self,
        http: httpx.Client,
        db_session: Session,
        server_settings: Settings,
        maintainer: User,
        built_project: Callable[..., Project],
    ) -> None:
        headers = bearer(db_session, maintainer)
        project = built_project("demo")
        demo = store_files(http, db_session, server_settings, project, headers)
        viewer = add_user(db_session, "vera")
        http.put("/api/v1/projects/demo/members/vera", headers=headers, json={"role": "viewer"})
        refused = http.delete("/api/v1/projects/demo", headers=bearer(db_session, viewer))
        assert_error(refused, 403)
        assert demo.existing() == demo.paths()


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
