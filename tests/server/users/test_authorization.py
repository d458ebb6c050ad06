from __future__ import annotations

from collections.abc import Mapping

import pytest

from conveyor.server.errors import NotAuthenticatedError, PermissionDeniedError
from conveyor.server.models import Project, Role, TokenScope, Visibility
from conveyor.server.users.authorization import Action, Actor, authorize, require_admin

OUR_PROJECT_ID = 1
OTHER_PROJECT_ID = 2

ALLOWED = "allowed"
UNAUTHENTICATED = "401"
DENIED = "403"


def _project(visibility: Visibility) -> Project:
    return Project(id=OUR_PROJECT_ID, name="app", git_url="file:///git/app", visibility=visibility)


def _member(role: Role, project_id: int = OUR_PROJECT_ID) -> Actor:
    return Actor(user_id=10, name=f"a-{role.value}", project_roles={project_id: role})


ACTORS = {
    "anonymous": Actor.anonymous(read_allowed=False),
    "anonymous_where_server_allows_read": Actor.anonymous(read_allowed=True),
    "signed_in_non_member": Actor(user_id=11, name="stranger"),
    "viewer": _member(Role.VIEWER),
    "developer": _member(Role.DEVELOPER),
    "maintainer": _member(Role.MAINTAINER),
    "admin": Actor(user_id=12, name="root", is_admin=True),
    "maintainer_of_other_project": _member(Role.MAINTAINER, OTHER_PROJECT_ID),
}

A, U, D = ALLOWED, UNAUTHENTICATED, DENIED
# Columns: read, trigger, cancel, retry, manage (DESIGN.md section 8).
PRIVATE_PROJECT_MATRIX = {
    "anonymous": (U, U, U, U, U),
    "anonymous_where_server_allows_read": (U, U, U, U, U),
    "signed_in_non_member": (D, D, D, D, D),
    "viewer": (A, D, D, D, D),
    "developer": (A, A, A, A, D),
    "maintainer": (A, A, A, A, A),
    "admin": (A, A, A, A, A),
    "maintainer_of_other_project": (D, D, D, D, D),
}
PUBLIC_PROJECT_MATRIX = {
    "anonymous": (U, U, U, U, U),
    "anonymous_where_server_allows_read": (A, U, U, U, U),
    "signed_in_non_member": (A, D, D, D, D),
    "viewer": (A, D, D, D, D),
    "developer": (A, A, A, A, D),
    "maintainer": (A, A, A, A, A),
    "admin": (A, A, A, A, A),
    "maintainer_of_other_project": (A, D, D, D, D),
}
ACTIONS = [Action.READ, Action.TRIGGER, Action.CANCEL, Action.RETRY, Action.MANAGE]


def _cases(
    visibility: Visibility, matrix: Mapping[str, tuple[str, ...]]
) -> list[tuple[str, Visibility, Action, str]]:
    return [
        (actor, visibility, action, outcome)
        for actor, outcomes in matrix.items()
        for action, outcome in zip(ACTIONS, outcomes, strict=True)
    ]


def _outcome(actor: Actor, project: Project, action: Action) -> str:
    try:
        authorize(actor, project, action)
    except NotAuthenticatedError:
        return UNAUTHENTICATED
    except PermissionDeniedError:
        return DENIED
    return ALLOWED


class TestAuthorize:
    @pytest.mark.parametrize(
        ("actor_name", "visibility", "action", "expected"),
        _cases(Visibility.PRIVATE, PRIVATE_PROJECT_MATRIX)
        + _cases(Visibility.PUBLIC, PUBLIC_PROJECT_MATRIX),
    )
    def test_role_matrix(
        self, actor_name: str, visibility: Visibility, action: Action, expected: str
    ) -> None:
        assert _outcome(ACTORS[actor_name], _project(visibility), action) == expected

    def test_matrix_names_every_action(self) -> None:
        assert set(ACTIONS) == set(Action)

    @pytest.mark.parametrize("action", [a for a in Action if a is not Action.READ])
    def test_read_only_token_of_a_maintainer_may_only_read(self, action: Action) -> None:
        actor = Actor(
            user_id=10,
            name="bot",
            project_roles={OUR_PROJECT_ID: Role.MAINTAINER},
            scopes=frozenset({TokenScope.READ}),
        )
        project = _project(Visibility.PRIVATE)
        authorize(actor, project, Action.READ)
        with pytest.raises(PermissionDeniedError) as raised:
            authorize(actor, project, action)
        assert raised.value.code == "token_scope_insufficient"

    def test_refusal_says_which_role_is_needed_and_which_is_held(self) -> None:
        with pytest.raises(PermissionDeniedError) as raised:
            authorize(ACTORS["viewer"], _project(Visibility.PRIVATE), Action.TRIGGER)
        assert "developer" in raised.value.message
        assert "viewer" in raised.value.message
        assert raised.value.detail["needed_role"] == "developer"


class TestRequireAdmin:
    def test_admin_passes(self) -> None:
        require_admin(ACTORS["admin"], writing=True)

    def test_maintainer_is_refused(self) -> None:
        with pytest.raises(PermissionDeniedError):
            require_admin(ACTORS["maintainer"], writing=False)

    def test_anonymous_must_sign_in(self) -> None:
        with pytest.raises(NotAuthenticatedError):
            require_admin(ACTORS["anonymous"], writing=False)

    def test_read_only_admin_token_cannot_change_users(self) -> None:
        reader = Actor(user_id=12, name="root", is_admin=True, scopes=frozenset({TokenScope.READ}))
        require_admin(reader, writing=False)
        with pytest.raises(PermissionDeniedError):
            require_admin(reader, writing=True)
