"""Every query of the projects package."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, false, func, or_, select, true, update
from sqlalchemy.orm import Session

from conveyor.server.models.job import Job
from conveyor.server.models.membership import Membership, Role
from conveyor.server.models.project import Project, Visibility
from conveyor.server.models.run import Run
from conveyor.server.models.step import Step
from conveyor.server.models.user import User
from conveyor.server.users.authorization import Actor


def readable_by(actor: Actor) -> ColumnElement[bool]:
    """A condition on `Project` that holds for the projects `actor` may read, the same
    rule as `authorize(actor, project, Action.READ)`, as SQL."""
    if actor.is_admin:
        return true()
    if actor.is_anonymous:
        return Project.visibility == Visibility.PUBLIC if actor.anonymous_read_allowed else false()
    member_of = list(actor.project_roles)
    if not member_of:
        return Project.visibility == Visibility.PUBLIC
    return or_(Project.visibility == Visibility.PUBLIC, Project.id.in_(member_of))


class ProjectRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, project_id: int) -> Project | None:
        return self.session.get(Project, project_id)

    def get_by_name(self, name: str) -> Project | None:
        return self.session.scalar(select(Project).where(Project.name == name))

    def list_readable(self, actor: Actor) -> Sequence[Project]:
        return self.session.scalars(
            select(Project).where(readable_by(actor)).order_by(Project.name)
        ).all()

    def count_owned_by(self, user_id: int) -> int:
        return (
            self.session.scalar(
                select(func.count()).select_from(Project).where(Project.owner_id == user_id)
            )
            or 0
        )

    def owner_name(self, project: Project) -> str | None:
        if project.owner_id is None:
            return None
        return self.session.scalar(select(User.name).where(User.id == project.owner_id))

    def lock_for_new_run(self, project_id: int) -> None:
        """Take the write lock that serialises run numbering in one project: a row lock
        on PostgreSQL, the database's write lock on SQLite. It is a write (not SELECT ...
        FOR UPDATE) because SQLite knows no row locks, and a transaction that starts with
        a write waits for its turn instead of failing on a stale read snapshot."""
        self.session.execute(update(Project).where(Project.id == project_id).values(id=Project.id))

    def lock(self, project_id: int) -> None:
        """Serialise changes to one project's members the way `lock_for_new_run`
        serialises run numbering: a row lock on PostgreSQL, the write lock on SQLite."""
        self.lock_for_new_run(project_id)

    def run_ids(self, project_id: int) -> Sequence[int]:
        return self.session.scalars(select(Run.id).where(Run.project_id == project_id)).all()

    def job_ids(self, project_id: int) -> Sequence[int]:
        return self.session.scalars(
            select(Job.id).join(Run, Run.id == Job.run_id).where(Run.project_id == project_id)
        ).all()

    def step_keys(self, project_id: int) -> list[tuple[int, int, int]]:
        """(run id, job id, step index) of every step of the project's runs."""
        rows = self.session.execute(
            select(Run.id, Job.id, Step.index)
            .join(Job, Job.run_id == Run.id)
            .join(Step, Step.job_id == Job.id)
            .where(Run.project_id == project_id)
        )
        return [(run_id, job_id, index) for run_id, job_id, index in rows]

    def git_urls_of_others(self, project_id: int) -> Sequence[str]:
        """The git URLs of every project but `project_id`."""
        return self.session.scalars(select(Project.git_url).where(Project.id != project_id)).all()

    def add(self, project: Project) -> Project:
        self.session.add(project)
        self.session.flush()
        return project

    def delete(self, project: Project) -> None:
        self.session.delete(project)
        self.session.flush()


class ProjectMemberRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def list_of_project(self, project_id: int) -> list[tuple[Membership, str]]:
        rows = self.session.execute(
            select(Membership, User.name)
            .join(User, User.id == Membership.user_id)
            .where(Membership.project_id == project_id)
            .order_by(User.name)
        )
        return [(membership, name) for membership, name in rows]

    def get(self, user_id: int, project_id: int) -> Membership | None:
        return self.session.scalar(
            select(Membership).where(
                Membership.user_id == user_id, Membership.project_id == project_id
            )
        )

    def delete(self, membership: Membership) -> None:
        self.session.delete(membership)
        self.session.flush()

    def managing_maintainers(self, project_id: int) -> Sequence[int]:
        """The user ids of the project's maintainers who can manage it by being members:
        active accounts that are not administrators (administrators manage every project
        anyway, so they are no proof that anyone else can)."""
        return self.session.scalars(
            select(Membership.user_id)
            .join(User, User.id == Membership.user_id)
            .where(
                Membership.project_id == project_id,
                Membership.role == Role.MAINTAINER,
                User.is_admin.is_(False),
                User.is_active.is_(True),
            )
        ).all()
