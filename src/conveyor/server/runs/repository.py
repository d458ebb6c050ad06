"""Every query of the runs package."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from conveyor.protocol.status import Status
from conveyor.server.models.agent import Agent
from conveyor.server.models.job import Job
from conveyor.server.models.project import Project
from conveyor.server.models.run import Run
from conveyor.server.models.step import Step


@dataclass(frozen=True)
class RunFilter:
    """Conditions of a run query; None leaves a condition out."""

    status: Status | None = None
    project: str | None = None
    branch: str | None = None
    created_by: str | None = None
    event: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        if self.status is not None:
            found.append(Run.status == self.status)
        if self.project is not None:
            found.append(Project.name == self.project)
        if self.branch is not None:
            found.append(Run.branch == self.branch)
        if self.created_by is not None:
            found.append(Run.actor_name == self.created_by)
        if self.event is not None:
            found.append(Run.event == self.event)
        if self.since is not None:
            found.append(Run.created_at >= self.since)
        if self.until is not None:
            found.append(Run.created_at <= self.until)
        return found


class RunRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, run_id: int) -> Run | None:
        return self.session.get(Run, run_id)

    def next_number(self, project_id: int) -> int:
        highest = self.session.scalar(
            select(func.max(Run.number)).where(Run.project_id == project_id)
        )
        return (highest or 0) + 1

    def job_with_owners(self, job_id: int) -> tuple[Job, Run, Project] | None:
        """A job with its run and project: what permission checks on a job need."""
        row = self.session.execute(
            select(Job, Run, Project)
            .join(Run, Run.id == Job.run_id)
            .join(Project, Project.id == Run.project_id)
            .where(Job.id == job_id)
        ).first()
        return None if row is None else (row[0], row[1], row[2])

    def with_project(self, run_id: int) -> tuple[Run, Project] | None:
        row = self.session.execute(
            select(Run, Project).join(Project, Project.id == Run.project_id).where(Run.id == run_id)
        ).first()
        return None if row is None else (row[0], row[1])

    def add(self, run: Run) -> Run:
        self.session.add(run)
        self.session.flush()
        return run

    def add_job(self, job: Job, step_names: Sequence[str]) -> tuple[Job, list[Step]]:
        """Add a job and its steps (numbered from 0, in the order given)."""
        self.session.add(job)
        self.session.flush()
        steps = [
            Step(job_id=job.id, index=index, name=name) for index, name in enumerate(step_names)
        ]
        self.session.add_all(steps)
        self.session.flush()
        return job, steps

    def _runs_with_project(self, readable: ColumnElement[bool]) -> Select[Run, str]:
        return select(Run, Project.name).join(Project, Project.id == Run.project_id).where(readable)

    def page(
        self,
        readable: ColumnElement[bool],
        run_filter: RunFilter,
        *,
        offset: int,
        limit: int,
    ) -> tuple[list[tuple[Run, str]], int]:
        """Runs matching the filter among readable projects, newest first, and how many
        match in all."""
        conditions = run_filter.conditions()
        total = self.session.scalar(
            select(func.count())
            .select_from(Run)
            .join(Project, Project.id == Run.project_id)
            .where(readable, *conditions)
        )
        rows = self.session.execute(
            self._runs_with_project(readable)
            .where(*conditions)
            .order_by(Run.created_at.desc(), Run.id.desc())
            .offset(offset)
            .limit(limit)
        )
        return [(run, name) for run, name in rows], total or 0

    def with_status(
        self, readable: ColumnElement[bool], status: Status, run_filter: RunFilter
    ) -> list[tuple[Run, str]]:
        """Runs in `status`, oldest first (the order they were queued or started in)."""
        rows = self.session.execute(
            self._runs_with_project(readable)
            .where(Run.status == status, *run_filter.conditions())
            .order_by(Run.created_at, Run.id)
        )
        return [(run, name) for run, name in rows]

    def jobs_of_run(self, run_id: int) -> Sequence[Job]:
        return self.session.scalars(select(Job).where(Job.run_id == run_id).order_by(Job.id)).all()

    def steps_of_jobs(self, job_ids: Sequence[int]) -> Sequence[Step]:
        if not job_ids:
            return []
        return self.session.scalars(
            select(Step).where(Step.job_id.in_(job_ids)).order_by(Step.job_id, Step.index)
        ).all()

    def agent_names(self, agent_ids: Sequence[int]) -> dict[int, str]:
        if not agent_ids:
            return {}
        rows = self.session.execute(select(Agent.id, Agent.name).where(Agent.id.in_(agent_ids)))
        return {agent_id: name for agent_id, name in rows}
