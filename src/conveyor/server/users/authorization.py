"""Who may do what: the one rule every service asks (DESIGN.md section 8).

    role        read  trigger  cancel  retry  manage
    anonymous   public projects, if the server allows anonymous read; nothing else
    signed in   public projects
    viewer      yes
    developer   yes   yes      yes     yes
    maintainer  yes   yes      yes     yes    yes
    admin       everything, in every project

A token without the `write` scope can only read, whatever its user's role.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from conveyor.server.errors import NotAuthenticatedError, PermissionDeniedError
from conveyor.server.models.api_token import TokenScope
from conveyor.server.models.membership import Role
from conveyor.server.models.project import Project, Visibility


class Action(StrEnum):
    READ = "read"
    TRIGGER = "trigger"
    CANCEL = "cancel"
    RETRY = "retry"
    MANAGE = "manage"


# The least role that allows each action.
REQUIRED_ROLE: Mapping[Action, Role] = {
    Action.READ: Role.VIEWER,
    Action.TRIGGER: Role.DEVELOPER,
    Action.CANCEL: Role.DEVELOPER,
    Action.RETRY: Role.DEVELOPER,
    Action.MANAGE: Role.MAINTAINER,
}

ALL_SCOPES = frozenset(TokenScope)


@dataclass(frozen=True)
class Actor:
    """Whoever makes a request, with what authorization needs to know about them."""

    user_id: int | None
    name: str
    is_admin: bool = False
    project_roles: Mapping[int, Role] = field(default_factory=dict)
    scopes: frozenset[TokenScope] = ALL_SCOPES
    """What the credential allows: everything for a session, the token's scopes else."""
    anonymous_read_allowed: bool = False
    """For anonymous actors: whether this server lets them read public projects."""

    is_service: bool = False
    """A duty of the server itself (poller, scheduler), not a person: not anonymous."""

    @property
    def is_anonymous(self) -> bool:
        return self.user_id is None and not self.is_service

    @classmethod
    def service(cls, name: str) -> Actor:
        """The server acting on its own (polling, schedules): may do anything a project
        allows; runs record `name` as who triggered them."""
        return cls(user_id=None, name=name, is_admin=True, is_service=True)

    @classmethod
    def anonymous(cls, *, read_allowed: bool) -> Actor:
        return cls(
            user_id=None,
            name="anonymous",
            scopes=frozenset({TokenScope.READ}),
            anonymous_read_allowed=read_allowed,
        )


def authorize(actor: Actor, project: Project, action: Action) -> None:
    """Return if `actor` may do `action` in `project`; raise otherwise.

    Raises NotAuthenticatedError (401) for anonymous actors that are refused, since
    signing in could help, and PermissionDeniedError (403) for signed-in ones.
    """
    if actor.is_anonymous:
        if (
            action is Action.READ
            and actor.anonymous_read_allowed
            and project.visibility is Visibility.PUBLIC
        ):
            return
        raise NotAuthenticatedError(
            f"sign in to {action.value} project {project.name!r} "
            "(session cookie from POST /api/v1/session, or an Authorization: Bearer token)",
            detail={"project": project.name, "action": action.value},
        )
    if action is not Action.READ and TokenScope.WRITE not in actor.scopes:
        raise PermissionDeniedError(
            f"this API token may only read; {action.value} in project {project.name!r} "
            "needs a token with the 'write' scope",
            code="token_scope_insufficient",
            detail={"project": project.name, "action": action.value, "needed_scope": "write"},
        )
    if actor.is_admin:
        return
    role = actor.project_roles.get(project.id)
    if action is Action.READ and project.visibility is Visibility.PUBLIC:
        return
    needed = REQUIRED_ROLE[action]
    if role is not None and role.rank >= needed.rank:
        return
    held = f"your role is {role.value}" if role else "you are not a member"
    raise PermissionDeniedError(
        f"{actor.name!r} may not {action.value} in project {project.name!r}: it needs the "
        f"{needed.value} role and {held}; a maintainer of the project can grant it",
        detail={
            "project": project.name,
            "action": action.value,
            "needed_role": needed.value,
            "role": role.value if role else None,
        },
    )


def require_admin(actor: Actor, *, writing: bool) -> None:
    """Return if `actor` is a global admin (with a credential that may write, when
    `writing`); raise otherwise."""
    if actor.is_anonymous:
        raise NotAuthenticatedError("sign in as an administrator to manage users")
    if not actor.is_admin:
        raise PermissionDeniedError(
            f"{actor.name!r} is not an administrator; only administrators manage users "
            "(an administrator can run `conveyor user set-admin NAME`)"
        )
    if writing and TokenScope.WRITE not in actor.scopes:
        raise PermissionDeniedError(
            "this API token may only read; changing users needs the 'write' scope",
            code="token_scope_insufficient",
        )
