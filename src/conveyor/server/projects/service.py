"""Projects and their members. Functions flush; the caller commits.

Every function that acts for someone takes the `Actor` and asks `authorize` first.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePosixPath

from sqlalchemy.orm import Session

from conveyor.agent.checkout import redact_credentials
from conveyor.pipeline.globs import GlobSyntaxError, compile_glob
from conveyor.server.config import Settings
from conveyor.server.errors import (
    ConflictError,
    InvalidInputError,
    NotAuthenticatedError,
    NotFoundError,
    PermissionDeniedError,
)
from conveyor.server.models.api_token import TokenScope
from conveyor.server.models.membership import Membership, Role
from conveyor.server.models.project import Project
from conveyor.server.models.user import User
from conveyor.server.projects import files as project_files
from conveyor.server.projects.repository import ProjectMemberRepository, ProjectRepository
from conveyor.server.projects.schemas import ProjectCreate, ProjectRead, ProjectUpdate
from conveyor.server.users import service as users_service
from conveyor.server.users.authorization import Action, Actor, authorize
from conveyor.server.users.repository import UserRepository

PROJECT_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_CONTROL_OR_SPACE = re.compile(r"[\s\x00-\x1f\x7f]")


class ProjectNotFoundError(NotFoundError):
    code = "project_not_found"


class ProjectAlreadyExistsError(ConflictError):
    code = "project_already_exists"


class ProjectLimitReachedError(PermissionDeniedError):
    code = "project_limit_reached"


class InvalidBranchFilterError(InvalidInputError):
    code = "invalid_branch_filter"


class MemberNotFoundError(NotFoundError):
    code = "member_not_found"


class LastMaintainerError(ConflictError):
    code = "last_maintainer"


# --- validation ---------------------------------------------------------------------------


def check_project_name(name: str) -> None:
    if not PROJECT_NAME_PATTERN.fullmatch(name):
        raise InvalidInputError(
            f"project name {name!r} is not allowed: use 1 to 100 letters, digits, '-', '_' "
            "or '.', starting with a letter or digit",
            detail={"field": "name"},
        )


def check_git_url(url: str) -> None:
    """Any URL git understands (https, ssh, scp-like, file, a path); only what would
    make it unsafe or plainly wrong is refused here, the first trigger tries it."""
    if not url:
        raise InvalidInputError("the git URL is empty", detail={"field": "git_url"})
    if url.startswith("-"):
        raise InvalidInputError(
            f"the git URL {redact_credentials(url)!r} starts with '-', which git would read "
            "as an option; give the repository's URL",
            detail={"field": "git_url"},
        )
    if _CONTROL_OR_SPACE.search(url):
        raise InvalidInputError(
            f"the git URL {redact_credentials(url)!r} contains whitespace or a control "
            "character; percent-encode spaces (%20) in URLs",
            detail={"field": "git_url"},
        )


def check_branch_name(branch: str, field: str = "default_branch") -> None:
    if branch.startswith("-") or _CONTROL_OR_SPACE.search(branch) or ".." in branch:
        raise InvalidInputError(
            f"{branch!r} is not a branch name: no leading '-', no whitespace, no '..'",
            detail={"field": field},
        )


def check_pipeline_path(path: str) -> None:
    parts = PurePosixPath(path).parts
    if (
        not path.strip()
        or path.startswith("/")
        or ".." in parts
        or "\\" in path
        or _CONTROL_OR_SPACE.search(path)
    ):
        raise InvalidInputError(
            f"pipeline path {path!r} is not allowed: give a path relative to the repository "
            "root, without '..', whitespace or backslashes, such as '.conveyor.yml' or "
            "'ci/pipeline.yml'",
            detail={"field": "pipeline_path"},
        )


def branch_patterns(branch_filter: str) -> list[str]:
    """The globs of a stored branch filter; empty means every branch."""
    return [pattern.strip() for pattern in branch_filter.split(",") if pattern.strip()]


def normalize_branch_filter(branch_filter: str) -> str:
    """The filter with each glob checked and the spaces around commas removed."""
    if not branch_filter.strip():
        return ""
    patterns = [pattern.strip() for pattern in branch_filter.split(",")]
    for position, pattern in enumerate(patterns, start=1):
        problem: str | None = None
        if not pattern:
            problem = "it is empty (two commas in a row, or a comma at an end)"
        elif pattern.startswith("-") or _CONTROL_OR_SPACE.search(pattern):
            problem = "a branch glob cannot start with '-' or contain whitespace"
        else:
            try:
                compile_glob(pattern)
            except GlobSyntaxError as error:
                problem = str(error)
        if problem is not None:
            raise InvalidBranchFilterError(
                f"branch filter {branch_filter!r}: glob {position} ({pattern!r}) is not "
                f"valid: {problem}. Write comma-separated globs such as 'main,release/*'",
                detail={"field": "branch_filter", "pattern": pattern, "position": position},
            )
    return ",".join(patterns)


# --- projects -----------------------------------------------------------------------------


def get_project(session: Session, name: str) -> Project:
    project = ProjectRepository(session).get_by_name(name)
    if project is None:
        raise ProjectNotFoundError(
            f"no project named {name!r}; GET /api/v1/projects lists the projects you can see",
            detail={"project": name},
        )
    return project


def get_project_for(session: Session, actor: Actor, name: str, action: Action) -> Project:
    """The project called `name`, if `actor` may do `action` in it."""
    project = get_project(session, name)
    authorize(actor, project, action)
    return project


def require_list_access(actor: Actor) -> None:
    """Lists show only what the actor may read; an anonymous caller on a server without
    anonymous read is told to sign in rather than given an empty list."""
    if actor.is_anonymous and not actor.anonymous_read_allowed:
        raise NotAuthenticatedError(
            "sign in to list projects and runs (session cookie from POST /api/v1/session, "
            "or an Authorization: Bearer token)"
        )


def list_projects(session: Session, actor: Actor) -> Sequence[Project]:
    require_list_access(actor)
    return ProjectRepository(session).list_readable(actor)


def create_project(
    session: Session, settings: Settings, actor: Actor, spec: ProjectCreate
) -> Project:
    """Create a project owned by `actor`, who becomes its maintainer. Users who are not
    administrators may own at most `settings.max_projects_per_user` projects."""
    if actor.is_anonymous or actor.user_id is None:
        raise NotAuthenticatedError("sign in to create a project")
    if TokenScope.WRITE not in actor.scopes:
        raise PermissionDeniedError(
            "this API token may only read; creating a project needs the 'write' scope",
            code="token_scope_insufficient",
        )
    check_project_name(spec.name)
    check_git_url(spec.git_url)
    check_branch_name(spec.default_branch)
    check_pipeline_path(spec.pipeline_path)
    branch_filter = normalize_branch_filter(spec.branch_filter)
    projects = ProjectRepository(session)
    if not actor.is_admin:
        owned = projects.count_owned_by(actor.user_id)
        if owned >= settings.max_projects_per_user:
            raise ProjectLimitReachedError(
                f"{actor.name!r} already owns {owned} project(s), the most a user who is not "
                f"an administrator may own ({settings.max_projects_per_user}); delete one, "
                "or ask an administrator (CONVEYOR_MAX_PROJECTS_PER_USER sets the limit)",
                detail={"owned": owned, "limit": settings.max_projects_per_user},
            )
    if projects.get_by_name(spec.name) is not None:
        raise ProjectAlreadyExistsError(
            f"a project named {spec.name!r} already exists; pick another name",
            detail={"project": spec.name},
        )
    project = projects.add(
        Project(
            name=spec.name,
            git_url=spec.git_url,
            default_branch=spec.default_branch,
            pipeline_path=spec.pipeline_path,
            branch_filter=branch_filter,
            build_command=spec.build_command or None,
            visibility=spec.visibility,
            concurrency_limit=spec.concurrency_limit,
            owner_id=actor.user_id,
        )
    )
    user = UserRepository(session).get(actor.user_id)
    if user is not None:
        users_service.set_membership(session, user, project, Role.MAINTAINER)
    return project


def update_project(session: Session, actor: Actor, name: str, changes: ProjectUpdate) -> Project:
    project = get_project_for(session, actor, name, Action.MANAGE)
    given = changes.model_fields_set
    if changes.git_url is not None:
        check_git_url(changes.git_url)
        project.git_url = changes.git_url
    if changes.default_branch is not None:
        check_branch_name(changes.default_branch)
        project.default_branch = changes.default_branch
    if changes.pipeline_path is not None:
        check_pipeline_path(changes.pipeline_path)
        project.pipeline_path = changes.pipeline_path
    if changes.branch_filter is not None:
        project.branch_filter = normalize_branch_filter(changes.branch_filter)
    if "build_command" in given:
        project.build_command = changes.build_command or None
    if changes.visibility is not None:
        project.visibility = changes.visibility
    if "concurrency_limit" in given:
        project.concurrency_limit = changes.concurrency_limit
    session.flush()
    return project


def delete_project(session: Session, settings: Settings, actor: Actor, name: str) -> Project:
    """Delete the project with its runs, jobs, steps, secrets and memberships (the
    database cascades), and, once that commits, its logs, artifacts, uploads and git
    mirror (see `projects.files`)."""
    project = get_project_for(session, actor, name, Action.MANAGE)
    leftovers = project_files.collect(session, settings, project)
    ProjectRepository(session).delete(project)
    project_files.remove_after_commit(session, leftovers)
    return project


def describe(session: Session, project: Project) -> ProjectRead:
    return ProjectRead(
        id=project.id,
        name=project.name,
        git_url=redact_credentials(project.git_url),
        default_branch=project.default_branch,
        pipeline_path=project.pipeline_path,
        branch_filter=project.branch_filter,
        build_command=project.build_command,
        visibility=project.visibility,
        concurrency_limit=project.concurrency_limit,
        owner=ProjectRepository(session).owner_name(project),
        created_at=project.created_at,
    )


# --- members ------------------------------------------------------------------------------


def list_members(session: Session, actor: Actor, name: str) -> list[tuple[Membership, str]]:
    project = get_project_for(session, actor, name, Action.READ)
    return ProjectMemberRepository(session).list_of_project(project.id)


def _refuse_losing_last_maintainer(
    session: Session, project: Project, user: User, change: str
) -> None:
    """Refuse a change that takes the maintainer role from the project's last member
    who can manage it. Administrators do not count: they can manage every project, so
    a project whose only maintainer is an administrator is one nobody else manages."""
    maintainers = ProjectMemberRepository(session).managing_maintainers(project.id)
    if list(maintainers) == [user.id]:
        raise LastMaintainerError(
            f"{user.name} is the last maintainer of project {project.name}; make someone "
            f"else maintainer first (PUT /api/v1/projects/{project.name}/members/<user> "
            f'with {{"role": "maintainer"}}), then {change}',
            detail={"project": project.name, "user": user.name},
        )


def set_member(session: Session, actor: Actor, name: str, user_name: str, role: Role) -> Membership:
    """Give `user_name` `role` in the project. Demoting its last maintainer is refused
    (`LastMaintainerError`)."""
    project = get_project_for(session, actor, name, Action.MANAGE)
    user = users_service.get_user_by_name(session, user_name)
    if role is not Role.MAINTAINER:
        # Two maintainers demoting each other at once must not both succeed.
        ProjectRepository(session).lock(project.id)
        _refuse_losing_last_maintainer(session, project, user, f"make {user.name} {role}")
    membership = users_service.set_membership(session, user, project, role)
    session.flush()
    return membership


def remove_member(session: Session, actor: Actor, name: str, user_name: str) -> Membership:
    """Remove `user_name` from the project. Removing its last maintainer is refused
    (`LastMaintainerError`)."""
    project = get_project_for(session, actor, name, Action.MANAGE)
    user = users_service.get_user_by_name(session, user_name)
    members = ProjectMemberRepository(session)
    membership = members.get(user.id, project.id)
    if membership is None:
        raise MemberNotFoundError(
            f"{user_name!r} is not a member of project {name!r}; "
            f"GET /api/v1/projects/{name}/members lists them",
            detail={"project": name, "user": user_name},
        )
    ProjectRepository(session).lock(project.id)
    _refuse_losing_last_maintainer(session, project, user, f"remove {user.name}")
    members.delete(membership)
    return membership
