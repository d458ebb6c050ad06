"""Rows and credentials for the projects, secrets and runs API tests."""

from __future__ import annotations

import httpx
from sqlalchemy.orm import Session

from conveyor.server.models.api_token import TokenScope
from conveyor.server.models.membership import Role
from conveyor.server.models.project import Project, Visibility
from conveyor.server.models.user import User
from conveyor.server.users import service as users_service
from tests.server.conftest import add_user


def add_project(
    session: Session,
    name: str = "demo",
    git_url: str = "file:///nonexistent",
    *,
    owner: User | None = None,
    members: dict[User, Role] | None = None,
    visibility: Visibility = Visibility.PRIVATE,
    branch_filter: str = "",
    default_branch: str = "main",
) -> Project:
    """A committed project with the given members."""
    project = Project(
        name=name,
        git_url=git_url,
        default_branch=default_branch,
        branch_filter=branch_filter,
        visibility=visibility,
        owner_id=owner.id if owner else None,
    )
    session.add(project)
    session.flush()
    for user, role in (members or {}).items():
        users_service.set_membership(session, user, project, role)
    session.commit()
    return project


def bearer(session: Session, user: User, *, write: bool = True) -> dict[str, str]:
    """Authorization headers with a fresh API token of `user`."""
    scopes = [TokenScope.READ, TokenScope.WRITE] if write else [TokenScope.READ]
    created = users_service.create_api_token(session, user, "tests", scopes=scopes)
    session.commit()
    return {"Authorization": f"Bearer {created.plaintext}"}


ACTORS = ("anonymous", "viewer", "developer", "maintainer", "admin", "outsider")
"""The permission matrix: `outsider` is the maintainer of another project."""


def actor_headers(session: Session, project: Project) -> dict[str, dict[str, str]]:
    """Headers for every actor of the permission matrix, on `project`."""
    viewer = add_user(session, "vera")
    developer = add_user(session, "dev")
    maintainer = add_user(session, "mia")
    admin = add_user(session, "root", is_admin=True)
    outsider = add_user(session, "otto")
    for user, role in (
        (viewer, Role.VIEWER),
        (developer, Role.DEVELOPER),
        (maintainer, Role.MAINTAINER),
    ):
        users_service.set_membership(session, user, project, role)
    add_project(session, f"{project.name}-other", members={outsider: Role.MAINTAINER})
    session.commit()
    return {
        "anonymous": {},
        "viewer": bearer(session, viewer),
        "developer": bearer(session, developer),
        "maintainer": bearer(session, maintainer),
        "admin": bearer(session, admin),
        "outsider": bearer(session, outsider),
    }


def assert_error(
    response: httpx.Response, status: int, code: str | None = None
) -> dict[str, object]:
    """The response is `status` with the error shape (and `code`, when given)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "detail"}
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    error: dict[str, object] = body["error"]
    return error
