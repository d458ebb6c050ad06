"""The files of a deleted project: removed only once the deletion commits, never while
a fetch holds the mirror. Real services make the files; SQLite and PostgreSQL."""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.server.config import Settings
from conveyor.server.models import Project, Role
from conveyor.server.projects import files as project_files
from conveyor.server.projects import service as projects_service
from conveyor.server.users.authorization import Actor
from tests.fixtures.gitrepos import Repo
from tests.server.conftest import add_user
from tests.server.logs.conftest import clean_data_dir
from tests.server.projects.disk import StoredFiles, store_files
from tests.server.projects.factories import add_project, bearer
from tests.server.runs.factories import PIPELINE

__all__ = ["clean_data_dir"]

pytestmark = pytest.mark.usefixtures("clean_data_dir")

ADMIN = Actor.service("tests")


@pytest.fixture
def demo(
    http: httpx.Client,
    db_session: Session,
    server_settings: Settings,
    make_repo: Callable[..., Repo],
) -> StoredFiles:
    mia = add_user(db_session, "mia")
    url = make_repo({".conveyor.yml": PIPELINE}).url
    project = add_project(db_session, "demo", url, members={mia: Role.MAINTAINER})
    return store_files(http, db_session, server_settings, project, bearer(db_session, mia))


def project_names(session: Session) -> list[str]:
    return list(session.scalars(select(Project.name)))


class TestRemoveAfterCommit:
    def test_deletion_rolled_back_leaves_every_file_and_stays_forgotten(
        self, db_session: Session, server_settings: Settings, demo: StoredFiles
    ) -> None:
        projects_service.delete_project(db_session, server_settings, ADMIN, "demo")
        db_session.rollback()
        assert demo.existing() == demo.paths()
        assert project_names(db_session) == ["demo"]
        # A later commit of the same session is not the deletion's.
        db_session.commit()
        assert demo.existing() == demo.paths()

    def test_deletion_removes_the_files_when_it_commits_not_before(
        self, db_session: Session, server_settings: Settings, demo: StoredFiles
    ) -> None:
        projects_service.delete_project(db_session, server_settings, ADMIN, "demo")
        assert demo.existing() == demo.paths()
        db_session.commit()
        assert demo.existing() == []
        assert project_names(db_session) == []


class TestRemove:
    def test_mirror_held_by_a_fetch_is_left_and_the_rest_removed(
        self,
        db_session: Session,
        server_settings: Settings,
        demo: StoredFiles,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        project = projects_service.get_project(db_session, "demo")
        leftovers = project_files.collect(db_session, server_settings, project)
        monkeypatch.setattr(project_files, "MIRROR_LOCK_WAIT_SECONDS", 0.2)
        # The lock a MirrorCache fetch holds while it changes the mirror.
        with demo.mirror.with_name(demo.mirror.name + ".lock").open("a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            with caplog.at_level(logging.WARNING, logger="conveyor.server.projects"):
                removal = project_files.remove(leftovers)
        assert demo.existing() == [demo.mirror]
        (problem,) = removal.problems
        assert str(demo.mirror) in problem and "still being fetched" in problem
        assert problem in caplog.text
        # Once the fetch is over, removing again takes the mirror too.
        assert project_files.remove(leftovers).removed == [demo.mirror]
        assert demo.existing() == []

    def test_second_removal_finds_nothing_and_reports_no_problem(
        self, db_session: Session, server_settings: Settings, demo: StoredFiles
    ) -> None:
        project = projects_service.get_project(db_session, "demo")
        leftovers = project_files.collect(db_session, server_settings, project)
        first = project_files.remove(leftovers)
        assert set(first.removed) >= {demo.log_directory, demo.artifact_directory, demo.mirror}
        again = project_files.remove(leftovers)
        assert (again.removed, again.problems) == ([], [])
