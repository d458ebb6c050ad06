"""Queries of the artifacts package."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.server.models.artifact import Artifact
from conveyor.server.models.job import Job
from conveyor.server.models.project import Project
from conveyor.server.models.run import Run


def artifact_at(session: Session, job_id: int, relative_path: str) -> Artifact | None:
    return session.scalars(
        select(Artifact).where(Artifact.job_id == job_id, Artifact.relative_path == relative_path)
    ).first()


def artifacts_of_run(session: Session, run_id: int) -> list[tuple[Artifact, Job]]:
    rows = session.execute(
        select(Artifact, Job)
        .join(Job, Job.id == Artifact.job_id)
        .where(Job.run_id == run_id)
        .order_by(Job.id, Artifact.name, Artifact.id)
    ).all()
    return [(row[0], row[1]) for row in rows]


def artifact_with_project(session: Session, artifact_id: int) -> tuple[Artifact, Project] | None:
    row = session.execute(
        select(Artifact, Project)
        .join(Job, Job.id == Artifact.job_id)
        .join(Run, Run.id == Job.run_id)
        .join(Project, Project.id == Run.project_id)
        .where(Artifact.id == artifact_id)
    ).first()
    return None if row is None else (row[0], row[1])
