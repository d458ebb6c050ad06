"""Rows the logs and artifacts tests need (a project, a run, a job and its steps),
made directly with the models: these tests are about logs and artifacts, not about
how runs are triggered."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from conveyor.pipeline.plan import ArtifactPlan, JobPlan, StepPlan
from conveyor.protocol.status import Status
from conveyor.server.config import Settings
from conveyor.server.models.job import Job
from conveyor.server.models.membership import Membership, Role
from conveyor.server.models.project import Project, Visibility
from conveyor.server.models.run import Run
from conveyor.server.models.secret import Secret
from conveyor.server.models.step import Step
from conveyor.server.models.user import User
from conveyor.server.secrets.cipher import SecretCipher


@dataclass
class Records:
    project: Project
    run: Run
    job: Job
    steps: list[Step]


def add_run(
    session: Session,
    project_name: str = "demo",
    *,
    steps: int = 2,
    visibility: Visibility = Visibility.PRIVATE,
    expire_in: float | None = None,
) -> Records:
    """A committed project with one running run of one job with `steps` queued steps."""
    project = Project(name=project_name, git_url="file:///nowhere", visibility=visibility)
    session.add(project)
    session.flush()
    run = Run(project_id=project.id, number=7, event="api", commit_sha="a" * 40)
    session.add(run)
    session.flush()
    plan = JobPlan(
        name="build",
        steps=[StepPlan(name=f"step{i}", commands=["true"]) for i in range(steps)],
        artifacts=ArtifactPlan(paths=["dist/*"], expire_in=expire_in),
    )
    job = Job(run_id=run.id, name="build", plan=plan.model_dump(mode="json"))
    session.add(job)
    session.flush()
    rows = [Step(job_id=job.id, index=i, name=f"step{i}") for i in range(steps)]
    session.add_all(rows)
    session.commit()
    return Records(project=project, run=run, job=job, steps=rows)


def add_secret(
    session: Session, settings: Settings, project: Project, name: str, value: str
) -> None:
    cipher = SecretCipher(settings.session_secret_key())
    session.add(Secret(project_id=project.id, name=name, value_ciphertext=cipher.encrypt(value)))
    session.commit()


def add_member(session: Session, user: User, project: Project, role: Role) -> None:
    session.add(Membership(user_id=user.id, project_id=project.id, role=role))
    session.commit()


__all__ = ["Records", "Status", "add_member", "add_run", "add_secret"]
