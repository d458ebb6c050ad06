"""Queries of the logs package."""

from __future__ import annotations

from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from conveyor.server.models.job import Job
from conveyor.server.models.project import Project
from conveyor.server.models.run import Run
from conveyor.server.models.step import Step


def step_with_owners(session: Session, step_id: int) -> tuple[Step, Job, Run, Project] | None:
    row = session.execute(
        select(Step, Job, Run, Project)
        .join(Job, Job.id == Step.job_id)
        .join(Run, Run.id == Job.run_id)
        .join(Project, Project.id == Run.project_id)
        .where(Step.id == step_id)
    ).first()
    return None if row is None else (row[0], row[1], row[2], row[3])


def step_of_job(session: Session, job_id: int, index: int) -> Step | None:
    return session.scalars(select(Step).where(Step.job_id == job_id, Step.index == index)).first()


def job_of_step(session: Session, step: Step) -> Job | None:
    return session.get(Job, step.job_id)


def raise_log_counters(session: Session, step: Step, size: int, lines: int) -> None:
    """Set the step's log size and line count, never lowering them: two appends to one
    step may commit in either order, and the larger figures are the true ones."""
    session.execute(
        update(Step)
        .where(Step.id == step.id)
        .values(
            log_byte_size=case((Step.log_byte_size < size, size), else_=Step.log_byte_size),
            log_line_count=case((Step.log_line_count < lines, lines), else_=Step.log_line_count),
        )
        .execution_options(synchronize_session=False)
    )
    session.expire(step, ["log_byte_size", "log_line_count"])
